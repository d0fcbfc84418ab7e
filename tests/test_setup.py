"""scripts/setup.sh leaves this clone an environment of its own: ./.venv runs this clone's vmfml,
and the shared environment it borrows the third-party packages from holds no vmfml at all."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"
PTH = "_vmfml_shared_env.pth"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (VENV / "bin" / "python").exists(), reason="no .venv: run setup.sh"),
]


def venv_python(code: str) -> str:
    run = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", code],
        cwd="/",  # not the repository: what is imported must come from the environment
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_venv_is_this_clones_own() -> None:
    assert not VENV.is_symlink(), (
        f"{VENV} links to {VENV.readlink()}, an environment shared by clones"
    )
    assert (VENV / "pyvenv.cfg").is_file()
    assert (VENV / "bin" / "vmfml").is_file()


def test_vmfml_is_imported_from_this_clone() -> None:
    where = Path(venv_python("import vmfml; print(vmfml.__file__)")).resolve()
    assert where == (REPO / "src" / "vmfml" / "__init__.py").resolve()


def test_shared_environment_holds_no_vmfml() -> None:
    (pth,) = VENV.glob(f"lib/python*/site-packages/{PTH}")
    shared = venv_python(
        "import sys; print(next(p for p in sys.path if p.endswith('site-packages') "
        "and not p.startswith(sys.prefix)))"
    )
    assert shared in pth.read_text()
    assert not list(Path(shared).glob("vmfml-*.dist-info")), f"vmfml is installed in {shared}"
    assert not list(Path(shared).glob("__editable__.vmfml-*")), f"vmfml is installed in {shared}"
    # The third-party packages do come from there.
    torch_file = venv_python("import importlib.util as u; print(u.find_spec('torch').origin)")
    assert Path(torch_file).is_relative_to(shared)
