"""Training configs that ship with vmfml, reachable by name: `vmfml train --config cub200`.

Each `NAME.yaml` in this folder is the starting point of one benchmark (CUB-200-2011, Cars196,
Stanford Online Products, In-Shop Clothes). `--config` takes either such a name or the path of
any YAML file; `resolve_config` turns what was given into the file to read.
"""

from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent
_SUFFIXES = (".yaml", ".yml")


def list_configs() -> list[str]:
    """The names of the shipped configs, sorted: `["cars196", "cub200", "inshop", "sop"]`."""
    return sorted(p.stem for p in CONFIG_DIR.iterdir() if p.suffix in _SUFFIXES and p.is_file())


def resolve_config(name_or_path: str | Path) -> Path:
    """The YAML file that `--config name_or_path` means.

    - An existing file is used as given (a path always wins, so a local `cub200.yaml` is read).
    - A bare name (`cub200`, or `cub200.yaml` where no such file exists) is a shipped config.
    - A missing `configs/NAME.yaml`, the configs' old place in a clone of the repository, is the
      shipped NAME too, so commands written for the clone keep working from anywhere.

    Raises FileNotFoundError naming the shipped configs when neither applies.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = list_configs()
    bare = str(name_or_path) == path.name
    if bare or (path.parent.name == "configs" and path.suffix in _SUFFIXES):
        name = path.stem if path.suffix in _SUFFIXES else path.name
        if name in shipped:
            return CONFIG_DIR / f"{name}.yaml"
    available = ", ".join(shipped)
    if bare and path.suffix not in _SUFFIXES:
        raise FileNotFoundError(
            f"no config named {str(name_or_path)!r}: the shipped configs are {available} "
            "(or give the path of a YAML file)"
        )
    raise FileNotFoundError(
        f"config file not found: {path} (the shipped configs, given by name, are {available})"
    )
