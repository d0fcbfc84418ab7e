"""`vmfml evaluate --checkpoint CKPT`: the metrics of a trained model, recomputed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vmfml.files import write_text_atomic
from vmfml.openset.commands import keep_rate
from vmfml.openset.functional import SCORES
from vmfml.train.commands import add_download_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vmfml.metrics.rerank import METHODS

    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a run folder of vmfml train (its best.pt), or a checkpoint file",
    )
    parser.add_argument(
        "--data", help="evaluate on another data set or folder (default: the training run's)"
    )
    parser.add_argument(
        "--split",
        choices=("standard", "class-disjoint", "open-set"),
        help="default: the training run's",
    )
    parser.add_argument(
        "--eval-ks", help="K of Recall@K, e.g. 1,2,4,8 (default: the training run's)"
    )
    parser.add_argument(
        "--unknown",
        metavar="FOLDER",
        help="images of classes the model never saw: open-set figures (AUROC, FPR@95, ...) of "
        "every rejection score against the test images, under 'open_set'",
    )
    parser.add_argument(
        "--score",
        choices=SCORES,
        help="the rejection score whose threshold decides (default: the stored one)",
    )
    parser.add_argument(
        "--keep-rate", type=keep_rate, help="share of known images kept (default: the stored one)"
    )
    parser.add_argument(
        "--reliability",
        metavar="PNG",
        help="also draw the reliability diagram of the vMF posterior, before and after its "
        "concentration is fitted on held-out images (same classes only)",
    )
    parser.add_argument(
        "--rerank",
        default="none",
        choices=METHODS,
        help="also report retrieval with this query-time re-ranking, beside the plain search, "
        "and the ms per query of each (vmfml.metrics.rerank)",
    )
    parser.add_argument(
        "--rerank-n",
        type=int,
        help="neighbours of aqe, alpha-qe, dba (default: chosen on validation)",
    )
    parser.add_argument(
        "--rerank-alpha",
        type=float,
        help="weight exponent of alpha-qe, dba (default: chosen on validation)",
    )
    add_download_argument(parser)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--out", help="write the metrics JSON here (default: print only)")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    from vmfml.files import check_output_file
    from vmfml.losses import create_loss
    from vmfml.train.checkpoint import load_embedding_model, model_file
    from vmfml.train.commands import print_summary
    from vmfml.train.config import TrainConfig, load_config
    from vmfml.train.datasets import build_datasets
    from vmfml.train.evaluation import evaluate_model
    from vmfml.train.loop import resolve_device
    from vmfml.train.open_set import (
        calibration_report,
        calibration_summary,
        embed_unknown,
        load_or_fit_classifier,
        open_set_report,
        print_open_set_figures,
        trained_kappa,
    )
    from vmfml.train.plots import plot_reliability

    model, ckpt = load_embedding_model(args.checkpoint)
    run_config = dict(ckpt.get("config") or TrainConfig().to_dict())
    saved = dict(run_config)
    overrides = {
        k: v
        for k, v in {"data": args.data, "split": args.split, "eval_ks": args.eval_ks}.items()
        if v
    }
    saved.update(overrides)
    if args.data:
        saved["data_root"] = None
    config = load_config(None, saved)
    for flag, value in (("--unknown", args.unknown), ("--reliability", args.reliability)):
        if value and config.split == "class-disjoint":
            raise ValueError(
                f"{flag} needs test images of the training classes, and a class-disjoint run "
                "tests on other classes: evaluate a run made with --split standard"
            )
    if args.reliability:
        check_output_file(args.reliability, "--reliability")
    if args.unknown and not Path(args.unknown).exists():
        raise FileNotFoundError(f"--unknown {args.unknown}: no such file or folder")
    device = resolve_device(args.device)
    data = build_datasets(config)
    loss = None
    entry = ckpt.get("loss")
    same_classes = list(data.train.class_names) == list(ckpt.get("class_names") or [])
    if (args.unknown or args.reliability) and not same_classes:
        raise ValueError(
            f"--data {config.data} has other classes than the run was trained on; "
            "--unknown and --reliability need test images of the run's own classes"
        )
    if entry and same_classes:
        loss = create_loss(entry["name"], entry["num_classes"], model.embed_dim, **entry["options"])
        loss.restore_state(entry["state_dict"])
        loss.eval()
    metrics, test_emb, test_labels = evaluate_model(
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
    known = (test_emb, test_labels)
    if not data.disjoint and same_classes:
        # The run's own classifier, fitted (once) on the run's own data, whatever --data says.
        classifier = load_or_fit_classifier(
            model,
            model_file(args.checkpoint),
            load_config(None, run_config),
            device,
            progress=not args.no_progress,
        ).configured(score=args.score, keep_rate=args.keep_rate)
        calibration = calibration_report(classifier, known, trained_kappa(loss))
        metrics["calibration"] = calibration_summary(calibration)
        if args.reliability:
            plot_reliability(calibration, args.reliability)
        if args.unknown:
            metrics["open_set"] = _open_set(args, model, classifier, device, known)
        elif data.unknown is not None:  # --split open-set: its held-out classes
            unknown = embed_unknown(model, data.unknown, device, progress=not args.no_progress)
            metrics["open_set"] = open_set_report(classifier, known, unknown)
    if args.rerank != "none":
        from vmfml.train.reranking import print_rerank, rerank_report

        metrics["rerank"] = rerank_report(
            args.rerank, args.rerank_n, args.rerank_alpha, model, data, config.eval_ks, device,
            known, progress=not args.no_progress,
        )  # fmt: skip
    if args.out:
        write_text_atomic(args.out, json.dumps(metrics, indent=2))
    print_summary(metrics, None)
    # The file the model came from (a run folder means its best.pt), not the folder above it.
    print(f"\nmodel: {model_file(args.checkpoint)}")
    if args.out:
        print(f"metrics written to {args.out}")
    if args.rerank != "none":
        print_rerank(metrics["rerank"])
    print_open_set_figures(metrics)
    return 0


def _open_set(
    args: argparse.Namespace,
    model: Any,
    classifier: Any,
    device: Any,
    known: tuple[Any, Any],
) -> dict[str, Any]:
    from vmfml.index.images import list_query_images
    from vmfml.openset.commands import embed_image_files
    from vmfml.train.open_set import open_set_report

    _, unknown = embed_image_files(
        model, list_query_images(args.unknown), device, progress=not args.no_progress
    )
    return open_set_report(classifier, known, unknown)
