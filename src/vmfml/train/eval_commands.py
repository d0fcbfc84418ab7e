"""`vmfml evaluate --checkpoint CKPT`: the metrics of a trained model, recomputed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vmfml.files import write_text_atomic


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, help="a checkpoint.pt written by vmfml train"
    )
    parser.add_argument(
        "--data", help="evaluate on another data set or folder (default: the training run's)"
    )
    parser.add_argument(
        "--split", choices=("standard", "class-disjoint"), help="default: the training run's"
    )
    parser.add_argument(
        "--eval-ks", help="K of Recall@K, e.g. 1,2,4,8 (default: the training run's)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", help="write the metrics JSON here (default: print only)")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from vmfml.losses import create_loss
    from vmfml.train.checkpoint import load_embedding_model
    from vmfml.train.commands import print_summary
    from vmfml.train.config import TrainConfig, load_config
    from vmfml.train.datasets import build_datasets
    from vmfml.train.evaluation import evaluate_model
    from vmfml.train.loop import resolve_device

    model, ckpt = load_embedding_model(args.checkpoint)
    saved = dict(ckpt.get("config") or TrainConfig().to_dict())
    overrides = {
        k: v
        for k, v in {"data": args.data, "split": args.split, "eval_ks": args.eval_ks}.items()
        if v
    }
    saved.update(overrides)
    if args.data:
        saved["data_root"] = None
    config = load_config(None, saved)
    device = resolve_device(args.device)
    data = build_datasets(config)
    loss = None
    entry = ckpt.get("loss")
    same_classes = list(data.train.class_names) == list(ckpt.get("class_names") or [])
    if entry and same_classes:
        loss = create_loss(entry["name"], entry["num_classes"], model.embed_dim, **entry["options"])
        loss.restore_state(entry["state_dict"])
        loss.eval()
    metrics, _, _ = evaluate_model(
        model.to(device),
        loss.to(device) if loss is not None else None,
        data.train,
        data.test,
        model.preprocessing,
        device,
        config.eval_ks,
        data.disjoint,
        progress=not args.no_progress,
        gallery_set=data.gallery,
    )
    if args.out:
        write_text_atomic(args.out, json.dumps(metrics, indent=2))
    print_summary(metrics, Path(args.checkpoint).parent)
    return 0
