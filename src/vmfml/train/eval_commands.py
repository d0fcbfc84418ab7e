"""`vmfml evaluate --checkpoint CKPT`: the metrics of a trained model, recomputed."""

from __future__ import annotations

import argparse
import json

from vmfml.files import write_text_atomic
from vmfml.train.commands import add_download_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a run folder of vmfml train (its best.pt), or a checkpoint file",
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
    add_download_argument(parser)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--out", help="write the metrics JSON here (default: print only)")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from vmfml.losses import create_loss
    from vmfml.train.checkpoint import load_embedding_model, model_file
    from vmfml.train.commands import download_if_asked, print_summary
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
    download_if_asked(args, config.data, config.data_root)
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
    print_summary(metrics, None)
    # The file the model came from (a run folder means its best.pt), not the folder above it.
    print(f"\nmodel: {model_file(args.checkpoint)}")
    if args.out:
        print(f"metrics written to {args.out}")
    return 0
