"""`vmfml train`: every config field is a flag; `--config run.yaml` gives a base to override."""

from __future__ import annotations

import argparse
import os
import shlex
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
        "with --config RUN/config.yaml and no --out-dir, the run in RUN",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in OUT_DIR (without it, an existing run is refused)",
    )
    add_download_argument(parser)
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
        text = f.metadata.get("help", "")
        # A help text that states its default already (in words) is not given a second one.
        if "(default" not in text:
            text = f"{text} (default: {default})"
        # default=None marks "not given" so YAML values are not overwritten by defaults.
        group.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(), help=text)


def add_download_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--download",
        action="store_true",
        help="first download the files of a built-in data set that are missing (fashion-mnist, "
        "and the Fashion part of combined-30) into --data-root, else $VMFML_DATA",
    )


def download_if_asked(args: argparse.Namespace, data: str, data_root: str | None) -> None:
    """`--download`: fetch the missing files of `data` before anything else reads them."""
    if not getattr(args, "download", False):
        return
    from vmfml.data.registry import download_dataset

    folder = download_dataset(data, data_root)
    if folder is not None:
        _say(f"downloaded {data} into {folder}")


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
        # Downloaded once, here, not by each of the processes (--download is not passed on).
        config = load_config(args.config, overrides_from(args))
        download_if_asked(args, config.data, config.data_root)
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
    if not args.resume and not args.overwrite:
        _refuse_existing_run(out)
    if os.environ.get("RANK", "0") == "0":
        download_if_asked(args, config.data, config.data_root)
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
    env = dict(os.environ)
    shown = shlex.join(command)
    if "OMP_NUM_THREADS" not in env:
        # Set here, so that torchrun does not print its own banner about it: one notice, not two.
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.nproc))
        shown = f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']} {shown}"
    print(f"running: {shown}", flush=True)
    return subprocess.run(command, env=env).returncode


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


def _refuse_existing_run(out: Path) -> None:
    """A run already in `out` is never silently replaced."""
    import torch

    from vmfml.train.loop import CHECKPOINT

    ckpt = out / CHECKPOINT
    if ckpt.is_file():
        try:  # memory-mapped: only the small entries are read
            saved = torch.load(ckpt, map_location="cpu", mmap=True, weights_only=False)
            epoch = int(saved["epoch"])
            epochs = int(saved.get("epochs") or saved["config"]["epochs"])
        except Exception:  # a damaged or foreign file is still not ours to replace
            what, finished = CHECKPOINT, False
        else:
            finished = epoch >= epochs
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


def print_summary(metrics: dict[str, Any], out_dir: Path | None) -> None:
    """The metrics as a table; with `out_dir`, the run folder and the files written in it."""
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
    if out_dir is None:
        return
    names = ("metrics.json", "best.pt", "checkpoint.pt", "training_curves.png", "embedding.png")
    written = ", ".join(name for name in names if (out_dir / name).is_file())
    print(f"\nrun folder: {out_dir} ({written})")


def print_next_steps(out_dir: Path, data: str) -> None:
    """The commands that use the model just trained, with this run's paths filled in, each
    runnable as printed from the current folder: the `vmfml` the user has (`command_prefix`),
    paths quoted for the shell, and a real query image when the training data is a folder."""
    from vmfml.text import command_prefix, quote_path

    vmfml = command_prefix()
    model = quote_path(
        out_dir / ("best.pt" if (out_dir / "best.pt").is_file() else "checkpoint.pt")
    )
    folder = Path(data).expanduser()
    gallery = quote_path(folder) if folder.is_dir() else "path/to/gallery"
    query_file = _first_image(folder) if folder.is_dir() else None
    query = quote_path(query_file) if query_file is not None else "path/to/query.jpg"
    index = quote_path(out_dir / "index")
    lines = [
        f"evaluate --checkpoint {model}",
        f"index    --checkpoint {model} --data {gallery} --out {index}",
        f"search   --index {index} {query} -k 5",
        f"serve    --index {index} --port 8000",
        f"embed    --checkpoint {model} --data {gallery} --out {quote_path(out_dir / 'gallery.npz')}",
        f"export   --checkpoint {model} --format onnx --out {quote_path(out_dir / 'model.onnx')}",
    ]
    print("\nnext:\n" + "\n".join(f"  {vmfml} {line}" for line in lines))
    if not folder.is_dir():  # a built-in data set: no folder of its images to name
        print(
            "  (path/to/gallery: your folder of images, one subfolder per class; "
            "path/to/query.jpg: an image file)"
        )


def _first_image(folder: Path) -> Path | None:
    """The first image of the first class subfolder of `folder`, in name order (None if none)."""
    from vmfml.data.image_folder import IMAGE_EXTENSIONS

    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        for path in sorted(sub.iterdir()):
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                return path
    return None
