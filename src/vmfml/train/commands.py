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
        help="continue from OUT_DIR/checkpoint.pt (same settings; --lr, --kappa and --max-minutes "
        "may change); with --config RUN/config.yaml and no --out-dir, the run in RUN; a finished "
        "run is left as it is",
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
    from vmfml.train.loop import TrainingDiverged, check_global_batch, train
    from vmfml.train.open_set import print_open_set_figures
    from vmfml.train.run_folder import claim, held_by_launcher

    if args.nproc < 1:
        raise ValueError(f"--nproc must be 1 or more; got {args.nproc}")
    launch = args.nproc > 1 and "LOCAL_RANK" not in os.environ
    if args.resume and args.overwrite:
        raise ValueError(
            "--resume continues the run in OUT_DIR and --overwrite replaces it: give one of them"
        )
    overrides = overrides_from(args)
    if args.resume and args.config is not None and "out_dir" not in overrides:
        run_dir = _run_folder_of(args.config)
        if run_dir is not None:
            # The run of that config.yaml, wherever it was moved: not the out_dir recorded in it.
            overrides["out_dir"] = str(run_dir)
            _say(f"resuming the run in {run_dir} (the folder of --config {args.config})")
    config = load_config(args.config, overrides)
    check_global_batch(
        config.batch_size, args.nproc if launch else int(os.environ.get("WORLD_SIZE", "1"))
    )
    out = Path(config.out_dir)
    owner = os.environ.get("RANK", "0") == "0"
    # Checked before any data is loaded, with the folder held: no other run can slip in.
    with claim(out, owner=owner, lock=not held_by_launcher(out)) as folder:
        done = _finished_run(folder.path, config.max_minutes) if args.resume else None
        if done is not None:  # nothing to train or test again
            _say(done)
            return 0
        _check_run_folder(folder.path, config, resume=args.resume, overwrite=args.overwrite)
        if launch or os.environ.get("RANK", "0") == "0":
            # Once: by the launcher or process 0 (--download is not passed on to torchrun).
            download_if_asked(args, config.data, config.data_root)
        if launch:
            return _relaunch_with_torchrun(args, holding=folder.path)
        try:
            result = train(config, resume=args.resume, folder=folder)
        except TrainingDiverged as err:
            print(f"vmfml train: stopped: {err}", file=sys.stderr)
            return 1
    if result.metrics:  # only process 0 of a multi-process run has them
        print_summary(result.metrics, Path(config.out_dir))
        print_open_set_figures(result.metrics)
        print_next_steps(Path(config.out_dir), config.data)
    return 0


def _check_run_folder(out: Path, config: Any, resume: bool, overwrite: bool) -> None:
    """What the run may do in `out`: continue its run (--resume), replace it (--overwrite), or
    start in a folder without a run, where only vmfml's own files may be replaced."""
    from vmfml.train.loop import CHECKPOINT, check_resumable
    from vmfml.train.run_folder import RunFolder

    if overwrite:
        return
    if resume:
        if not (out / CHECKPOINT).is_file():
            raise FileNotFoundError(
                f"--resume: no checkpoint at {out / CHECKPOINT}; start the run without --resume"
            )
        check_resumable(out / CHECKPOINT, config, mmap=True)
    else:
        _refuse_existing_run(out)
    foreign = RunFolder(out).foreign_files()
    if foreign:
        what = "--resume would write over them" if resume else "a new run would replace them"
        raise ValueError(
            f"{out} holds {', '.join(foreign)}, which vmfml did not write; {what}: move them "
            "away, pass --overwrite to replace them, or use --out-dir NEW"
        )


def _relaunch_with_torchrun(args: argparse.Namespace, holding: Path) -> int:
    """`vmfml train --nproc N ...` = `torchrun --standalone --nproc-per-node N -m vmfml train ...`,
    run while this process holds the run folder (its processes know it by `HELD_ENV`)."""
    import subprocess

    from vmfml.train.run_folder import HELD_ENV, LOCK

    argv = [f"--{k.replace('_', '-')}={v}" for k, v in overrides_from(args).items()]
    argv += [f"--config={args.config}"] if args.config else []
    argv += [flag for flag in ("--resume", "--overwrite") if getattr(args, flag[2:])]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command = [*launcher, "--nproc-per-node", str(args.nproc), "-m", "vmfml", "train", *argv]
    env = {**os.environ, HELD_ENV: str((holding / LOCK).resolve())}
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


def _progress(ckpt: Path) -> tuple[int, int, bool, dict[str, Any]] | None:
    """(epoch, epochs planned, finished, the checkpoint) of a checkpoint; None when it cannot be
    read. A run is finished when it planned no further epoch: all done, an early stop or the
    time cap."""
    from vmfml.train.checkpoint import load_checkpoint

    try:  # memory-mapped: only the small entries are read; tensors and plain data only
        saved = load_checkpoint(ckpt, mmap=True)
        epoch = int(saved["epoch"])
        epochs = int(saved.get("epochs") or saved["config"]["epochs"])
    except Exception:
        return None
    return epoch, epochs, epoch >= epochs or saved.get("stop_reason") is not None, saved


def _finished_run(out: Path, max_minutes: float | None) -> str | None:
    """What to say to `--resume` when the run in `out` is finished and tested (its checkpoint
    says it stopped, and metrics.json is written); None when there is something to resume,
    as for a run stopped by its time cap resumed under another `max_minutes`."""
    import json

    from vmfml.train.loop import CHECKPOINT

    progress = _progress(out / CHECKPOINT)
    if progress is None or not progress[2]:
        return None
    epoch, epochs, _, saved = progress
    capped = str(saved.get("stop_reason") or "").startswith("time cap")
    if capped and epoch < epochs and max_minutes != (saved.get("config") or {}).get("max_minutes"):
        return None  # a new cap: the run goes on
    try:
        kept = json.loads((out / "metrics.json").read_text())["kept"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # stopped before its test: --resume evaluates it
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
            epoch, epochs, finished, _ = progress
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
    for name, what in (("tensorboard", "tensorboard/"), ("mlflow.db", "mlflow.db")):
        if (out_dir / name).exists():  # --log-to
            written += f", {what}"
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
