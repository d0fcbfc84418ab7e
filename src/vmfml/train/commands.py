"""`vmfml train`: every config field is a flag; `--config run.yaml` gives a base to override."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vmfml.train.config import config_fields


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", help="YAML file of config keys (command-line flags override it)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from OUT_DIR/checkpoint.pt (same settings)"
    )
    group = parser.add_argument_group("settings (defaults shown; see also --config)")
    for f in config_fields():
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not None else "none"
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
    from vmfml.train.loop import TrainingDiverged, train

    config = load_config(args.config, overrides_from(args))
    try:
        result = train(config, resume=args.resume)
    except TrainingDiverged as err:
        print(f"vmfml train: stopped: {err}", file=sys.stderr)
        return 1
    if result.metrics:  # only process 0 of a multi-process run has them
        print_summary(result.metrics, Path(config.out_dir))
    return 0


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
    print(
        f"\nrun folder: {out_dir} (metrics.json, checkpoint.pt, training_curves.png, embedding.png)"
    )
