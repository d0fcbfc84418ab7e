"""`vmfml train`: every config field is a flag; `--config run.yaml` gives a base to override."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from vmfml.train.config import config_fields


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", help="YAML file of config keys (command-line flags override it)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT_DIR/checkpoint.pt (same settings; --lr and --kappa may change); "
        "with --config RUN/config.yaml and no --out-dir, the run in RUN; a finished run is "
        "left as it is",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in OUT_DIR (without it, an existing run is refused)",
    )
    parser.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="train in N processes on this machine (a shortcut for torchrun --standalone "
        "--nproc-per-node N -m vmfml train ...; one per GPU, or CPU processes with gloo)",
    )
    group = parser.add_argument_group("settings (defaults shown; see also --config)")
    for f in config_fields():
        flag = "--" + f.name.replace("_", "-")
        default = f.metadata.get("default_text", f.default if f.default is not None else "none")
        if isinstance(default, tuple):
            default = ",".join(str(k) for k in default)
        # default=None marks "not given" so YAML values are not overwritten by defaults.
        group.add_argument(
            flag,
            dest=f.name,
            default=None,
            metavar=f.name.upper(),
            help=f"{f.metadata.get('help', '')} (default: {default})",
        )


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    return {
        f.name: getattr(args, f.name)
        for f in config_fields()
        if getattr(args, f.name, None) is not None
    }


def run(args: argparse.Namespace) -> int:
    from vmfml.train.config import load_config
    from vmfml.train.loop import CHECKPOINT, TrainingDiverged, train

    if args.nproc < 1:
        raise ValueError(f"--nproc must be 1 or more; got {args.nproc}")
    if args.nproc > 1 and "LOCAL_RANK" not in os.environ:
        return _relaunch_with_torchrun(args)
    if args.resume and args.overwrite:
        raise ValueError(
            "--resume continues the run in OUT_DIR and --overwrite replaces it: give one of them"
        )
    overrides = overrides_from(args)
    if args.resume and args.config is not None and "out_dir" not in overrides:
        folder = _run_folder_of(args.config)
        if folder is not None:
            # The run of that config.yaml, wherever it was moved: not the out_dir recorded in it.
            overrides["out_dir"] = str(folder)
            _say(f"resuming the run in {folder} (the folder of --config {args.config})")
    config = load_config(args.config, overrides)
    out = Path(config.out_dir)
    # Checked before any data is loaded.
    if args.resume and not (out / CHECKPOINT).is_file():
        raise FileNotFoundError(
            f"--resume: no checkpoint at {out / CHECKPOINT}; start the run without --resume"
        )
    if args.resume:
        done = _finished_run(out)
        if done is not None:  # nothing to train or test again
            _say(done)
            return 0
    elif not args.overwrite:
        _refuse_existing_run(out)
    try:
        result = train(config, resume=args.resume)
    except TrainingDiverged as err:
        print(f"vmfml train: stopped: {err}", file=sys.stderr)
        return 1
    if result.metrics:  # only process 0 of a multi-process run has them
        print_summary(result.metrics, Path(config.out_dir))
        print_next_steps(Path(config.out_dir), config.data)
    return 0


def _relaunch_with_torchrun(args: argparse.Namespace) -> int:
    """`vmfml train --nproc N ...` = `torchrun --standalone --nproc-per-node N -m vmfml train ...`."""
    import subprocess

    argv = [f"--{k.replace('_', '-')}={v}" for k, v in overrides_from(args).items()]
    argv += [f"--config={args.config}"] if args.config else []
    argv += [flag for flag in ("--resume", "--overwrite") if getattr(args, flag[2:])]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command = [*launcher, "--nproc-per-node", str(args.nproc), "-m", "vmfml", "train", *argv]
    print("running: torchrun --standalone --nproc-per-node", args.nproc, "-m vmfml train", *argv)
    return subprocess.run(command).returncode


def _say(line: str) -> None:
    """Print once, from the first process of a torchrun launch (every process runs this file)."""
    if os.environ.get("RANK", "0") == "0":
        print(line, flush=True)


def _run_folder_of(config_path: str) -> Path | None:
    """The run folder `config_path` belongs to: a config.yaml beside a checkpoint.pt."""
    from vmfml.train.loop import CHECKPOINT

    path = Path(config_path)
    if path.name == "config.yaml" and path.is_file() and (path.parent / CHECKPOINT).is_file():
        return path.parent
    return None


def _progress(ckpt: Path) -> tuple[int, int, bool] | None:
    """(epoch, epochs planned, finished) of a checkpoint; None when it cannot be read. A run
    is finished when it planned no further epoch: all done, an early stop or the time cap."""
    import torch

    try:  # memory-mapped: only the small entries are read
        saved = torch.load(ckpt, map_location="cpu", mmap=True, weights_only=False)
        epoch = int(saved["epoch"])
        epochs = int(saved.get("epochs") or saved["config"]["epochs"])
    except Exception:
        return None
    return epoch, epochs, epoch >= epochs or saved.get("stop_reason") is not None


def _finished_run(out: Path) -> str | None:
    """What to say to `--resume` when the run in `out` is finished and tested (its checkpoint
    says it stopped, and metrics.json is written); None when there is something to resume."""
    import json

    from vmfml.train.loop import CHECKPOINT

    progress = _progress(out / CHECKPOINT)
    if progress is None or not progress[2]:
        return None
    try:
        kept = json.loads((out / "metrics.json").read_text())["kept"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # stopped before its test: --resume evaluates it
    epoch, epochs, _ = progress
    return (
        f"{out} holds a finished run (epoch {epoch} of {epochs}: {kept.get('reason')}); nothing "
        f"to resume. Its test metrics are in {out / 'metrics.json'}, measured on the kept epoch "
        f"{kept['epoch']}. Pass --overwrite to train it again, or --out-dir NEW."
    )


def _refuse_existing_run(out: Path) -> None:
    """A run already in `out` is never silently replaced."""
    from vmfml.train.loop import CHECKPOINT

    ckpt = out / CHECKPOINT
    if ckpt.is_file():
        progress = _progress(ckpt)
        if progress is None:  # a damaged or foreign file is still not ours to replace
            what, finished = CHECKPOINT, False
        else:
            epoch, epochs, finished = progress
            what = f"{CHECKPOINT}, {'finished: ' if finished else ''}epoch {epoch} of {epochs}"
        todo = "" if finished else "--resume to continue it, "
        raise ValueError(
            f"{out} already holds a run ({what}); pass {todo}--overwrite to replace it, "
            "or --out-dir NEW"
        )
    if (out / "metrics.json").is_file():
        raise ValueError(
            f"{out} already holds a finished run (metrics.json); pass --overwrite to replace it, "
            "or --out-dir NEW"
        )


def print_summary(metrics: dict[str, Any], out_dir: Path) -> None:
    rows = [(k, v) for k, v in metrics.items() if isinstance(v, float)]
    width = max(len(k) for k, _ in rows)
    print("\nresults")
    for key, value in rows:
        print(f"  {key:<{width}}  {value:.4f}")
    timing = metrics.get("timing", {})
    if timing:
        print(
            f"  {'time':<{width}}  {timing['train_seconds']:.1f} s training + {timing['refresh_seconds']:.1f} s "
            f"mean-direction refresh, {timing['images_per_second']:.0f} images/s"
        )
    names = ("metrics.json", "best.pt", "checkpoint.pt", "training_curves.png", "embedding.png")
    written = ", ".join(name for name in names if (out_dir / name).is_file())
    for name, what in (("tensorboard", "tensorboard/"), ("mlflow.db", "mlflow.db")):
        if (out_dir / name).exists():  # --log-to
            written += f", {what}"
    print(f"\nrun folder: {out_dir} ({written})")


def print_next_steps(out_dir: Path, data: str) -> None:
    """The commands that use the model just trained, with this run's paths filled in."""
    model = out_dir / ("best.pt" if (out_dir / "best.pt").is_file() else "checkpoint.pt")
    gallery = data if Path(data).is_dir() else "path/to/gallery"
    index = out_dir / "index"
    print(
        "\nnext:\n"
        f"  vmfml evaluate --checkpoint {model}\n"
        f"  vmfml index    --checkpoint {model} --data {gallery} --out {index}\n"
        f"  vmfml search   --index {index} path/to/query.jpg -k 5\n"
        f"  vmfml serve    --index {index} --port 8000\n"
        f"  vmfml embed    --checkpoint {model} --data {gallery} --out {out_dir / 'gallery.npz'}\n"
        f"  vmfml export   --checkpoint {model} --format onnx --out {out_dir / 'model.onnx'}"
    )
