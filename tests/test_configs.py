"""The shipped training configs: reachable by name from any folder, and inside the built wheel."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from vmfml.configs import CONFIG_DIR, list_configs, resolve_config

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ["cars196", "cub200", "inshop", "sop"]


def test_the_benchmark_configs_are_shipped() -> None:
    assert list_configs() == SHIPPED
    assert CONFIG_DIR == REPO / "src" / "vmfml" / "configs"


@pytest.mark.parametrize("given", ["cub200", "cub200.yaml", "configs/cub200.yaml"])
def test_a_name_or_the_old_clone_path_is_the_shipped_file(
    given: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # nothing of that name here
    assert resolve_config(given) == CONFIG_DIR / "cub200.yaml"


def test_an_existing_file_is_read_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    local = tmp_path / "cub200.yaml"
    local.write_text("epochs: 1\n")
    assert resolve_config("cub200.yaml") == Path("cub200.yaml")  # the local file wins
    assert resolve_config(local) == local
    assert resolve_config(CONFIG_DIR / "sop.yaml") == CONFIG_DIR / "sop.yaml"


def test_unknown_names_and_missing_files_list_the_shipped_configs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        FileNotFoundError,
        match="no config named 'cub': the shipped configs are cars196, cub200, inshop, sop",
    ):
        resolve_config("cub")
    for missing in ("runs/my.yaml", "configs/cub.yaml", "my.yaml"):
        with pytest.raises(FileNotFoundError, match=f"config file not found: {missing} .*cub200"):
            resolve_config(missing)


def test_train_reads_a_shipped_config_by_name(run_cli) -> None:
    from vmfml.train.config import load_config

    config = load_config("cub200", {"epochs": "2"})
    assert config.data == "cub200" and config.epochs == 2
    code, _, err = run_cli("train", "--config", "cub")
    assert code == 2
    assert "no config named 'cub'" in err and "cars196, cub200, inshop, sop" in err


@pytest.mark.slow
def test_installed_wheel_finds_configs_by_name_from_another_folder(tmp_path: Path) -> None:
    """`pip install` of the project, then `vmfml train --config cub200` from an unrelated folder.

    The wheel is built offline from a copy of the working tree (pyproject.toml, README.md, src)
    with the environment's setuptools, then installed without dependencies into a folder of its
    own that goes first on PYTHONPATH, so the `vmfml` that runs is the installed copy (checked)
    while torch and the rest come from this environment.
    """
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("building the wheel offline needs setuptools in this environment")
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(
        REPO / "src",
        source / "src",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]

    def run(
        *cmd: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
        )

    built = run(
        *pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", tmp_path, source
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = tmp_path.glob("vmfml-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for config in SHIPPED:
        assert f"vmfml/configs/{config}.yaml" in names
    assert "vmfml/configs/__init__.py" in names

    site = tmp_path / "site"
    installed = run(*pip, "install", "--no-deps", "--no-index", "--target", site, wheel)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    elsewhere = tmp_path / "elsewhere"  # no configs/ folder here, and not the repository
    (elsewhere / "empty").mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = "import vmfml.configs as c; print(c.__file__); print(c.resolve_config('cub200'))"
    found = run(sys.executable, "-c", code, cwd=elsewhere, env=env)
    assert found.returncode == 0, found.stderr
    module_file, config_file = found.stdout.split()
    assert Path(module_file).is_relative_to(site)
    assert Path(config_file) == site / "vmfml" / "configs" / "cub200.yaml"

    # The installed command: the config is found and applied (data: cub200), and the run stops
    # only at the empty data folder.
    train = run(
        site / "bin" / "vmfml",
        "train",
        "--config",
        "cub200",
        "--data-root",
        elsewhere / "empty",
        "--out-dir",
        elsewhere / "run",
        "--device",
        "cpu",
        cwd=elsewhere,
        env=env,
    )
    assert "config file not found" not in train.stderr
    assert "no config named" not in train.stderr
    assert train.returncode == 2 and "CUB_200_2011" in train.stderr, train.stderr
