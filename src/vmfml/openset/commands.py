"""`vmfml classify`: the known class of each new image, with its probability, or "unknown".

Images come as files, folders (searched recursively; an image in a class subfolder takes the
subfolder's name as its true label, so accuracy can be reported) or `--list FILE` (one path a
line). The model is a run folder or checkpoint; what classification needs beside the network
(mean directions, concentrations, rejection thresholds: `vmfml.openset.OpenSetClassifier`) is
read from the run's classifier.pt, or fitted once from the run's data and written there.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from vmfml.index.cli_common import add_model_run_arguments, add_on_error_argument, positive_int
from vmfml.openset.functional import SCORES

UNKNOWN = "unknown"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "images", nargs="*", metavar="IMAGE", help="image files or folders of images"
    )
    parser.add_argument(
        "--checkpoint", required=True, help="a run folder or checkpoint written by vmfml train"
    )
    parser.add_argument("--list", help="a text file naming one image path a line (# comments)")
    parser.add_argument("-k", type=positive_int, default=3, help="classes shown per image")
    parser.add_argument("--format", choices=("table", "jsonl", "csv"), default="table")
    parser.add_argument(
        "--score",
        choices=SCORES,
        help="the rejection score (default: the one stored with the model)",
    )
    parser.add_argument(
        "--keep-rate",
        type=keep_rate,
        help="share of known images kept, set on held-out images (default: stored, 0.95)",
    )
    parser.add_argument(
        "--no-reject", action="store_true", help="never answer unknown: always the best class"
    )
    add_on_error_argument(parser, "image")
    add_model_run_arguments(parser, batch_size=64)


def run(args: argparse.Namespace) -> int:
    from vmfml.index.images import list_query_images
    from vmfml.train.checkpoint import load_embedding_model, model_file
    from vmfml.train.config import TrainConfig, load_config
    from vmfml.train.loop import resolve_device
    from vmfml.train.open_set import load_or_fit_classifier

    images = [q for source in args.images for q in list_query_images(source)]
    if args.list:
        images += _read_list(Path(args.list))
    if not images:
        raise ValueError("no images to classify: give files, folders or --list FILE")
    device = resolve_device(args.device)
    model, ckpt = load_embedding_model(args.checkpoint, map_location=device)
    model = model.to(device)
    config = load_config(None, dict(ckpt.get("config") or TrainConfig().to_dict()))
    classifier = load_or_fit_classifier(
        model, model_file(args.checkpoint), config, device, progress=not args.no_progress
    ).configured(score=args.score, keep_rate=args.keep_rate)
    kept, embeddings = embed_image_files(
        model, images, device, args.batch_size, args.on_error, not args.no_progress
    )
    prediction = classifier.predict(embeddings, top_k=args.k, reject=not args.no_reject)
    rows = [
        _row(path, truth, classifier.class_names, prediction, i)
        for i, (path, truth) in enumerate(kept)
    ]
    {"table": _print_table, "jsonl": _print_jsonl, "csv": _print_csv}[args.format](rows)
    _print_summary(rows, classifier, args.no_reject)
    return 0


def keep_rate(text: str) -> float:
    """argparse type of --keep-rate: a share in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 1], got {text}")
    return value


def _read_list(path: Path) -> list[tuple[Path, str | None]]:
    if not path.is_file():
        raise FileNotFoundError(f"--list {path}: no such file")
    lines = [line.strip() for line in path.read_text().splitlines()]
    return [(Path(line), None) for line in lines if line and not line.startswith("#")]


def embed_image_files(
    model: torch.nn.Module,
    images: list[tuple[Path, str | None]],
    device: torch.device,
    batch_size: int = 64,
    on_error: str = "raise",
    progress: bool = True,
) -> tuple[list[tuple[Path, str | None]], torch.Tensor]:
    """Unit embeddings `[N, D]` of the readable images (path, label) and those images, in order;
    with on_error="skip" an unreadable one is left out with a warning, else it stops, named."""
    from tqdm.auto import tqdm

    from vmfml.data.transforms import make_transform
    from vmfml.index.images import prepare
    from vmfml.models.inference import embed_batches

    preprocessing: dict[str, Any] = dict(model.preprocessing)  # type: ignore[arg-type]
    transform = make_transform(preprocessing, train=False)
    kept: list[tuple[Path, str | None]] = []

    def batches() -> Iterator[tuple[torch.Tensor, None]]:
        chunk: list[torch.Tensor] = []
        with tqdm(images, desc="embed images", unit="img", disable=not progress) as bar:
            for path, truth in bar:
                try:
                    chunk.append(prepare(path, preprocessing, transform))
                except (ValueError, FileNotFoundError) as err:
                    if on_error != "skip":
                        raise
                    warnings.warn(f"skipping image: {err}", stacklevel=1)
                    continue
                kept.append((path, truth))
                if len(chunk) == batch_size:
                    yield torch.stack(chunk), None
                    chunk = []
        if chunk:
            yield torch.stack(chunk), None

    out = [z.cpu() for z, _ in embed_batches(model, batches(), device)]
    if not out:
        raise ValueError("none of the images could be read")
    return kept, torch.nn.functional.normalize(torch.cat(out), dim=1)


def _row(
    path: Path, truth: str | None, names: list[str], prediction: Any, i: int
) -> dict[str, Any]:
    best = names[int(prediction.label[i])]
    return {
        "path": str(path),
        "label": UNKNOWN if bool(prediction.unknown[i]) else best,
        "class": best,
        "probability": float(prediction.probability[i]),
        "score": float(prediction.score[i]),
        "top": [
            {"class": names[int(c)], "probability": float(p)}
            for c, p in zip(prediction.top[i], prediction.top_probability[i], strict=True)
        ],
        "true_label": truth,
    }


def _print_table(rows: list[dict[str, Any]]) -> None:
    width = max(len("label"), *(len(r["label"]) for r in rows))
    print(f"{'label':<{width}}  {'prob':>6}  {'score':>8}  top classes  path")
    for r in rows:
        top = ", ".join(f"{t['class']} {t['probability']:.3f}" for t in r["top"])
        print(
            f"{r['label']:<{width}}  {r['probability']:>6.3f}  {r['score']:>8.4f}  {top}  {r['path']}"
        )


def _print_jsonl(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        print(json.dumps(r))


def _print_csv(rows: list[dict[str, Any]]) -> None:
    writer = csv.writer(sys.stdout)
    writer.writerow(["path", "label", "class", "probability", "score", "top", "true_label"])
    for r in rows:
        top = ";".join(f"{t['class']}:{t['probability']:.6f}" for t in r["top"])
        writer.writerow(
            [
                r["path"],
                r["label"],
                r["class"],
                f"{r['probability']:.6f}",
                f"{r['score']:.6f}",
                top,
                r["true_label"] or "",
            ]
        )


def _print_summary(rows: list[dict[str, Any]], classifier: Any, no_reject: bool) -> None:
    unknown = sum(r["label"] == UNKNOWN for r in rows)
    noun = "image" if len(rows) == 1 else "images"
    how = (
        "rejection off"
        if no_reject
        else f"{unknown} unknown by {classifier.score} > {classifier.threshold:.4g}, the threshold "
        f"that keeps {classifier.keep_rate:.0%} of the {classifier.info.get('fitted_on', 'held-out images')}"
    )
    print(f"classified {len(rows)} {noun} ({how})", file=sys.stderr)
    labelled = [r for r in rows if r["true_label"] is not None]
    if labelled:
        known = [r for r in labelled if r["true_label"] in classifier.class_names]
        if known:
            correct = sum(r["class"] == r["true_label"] for r in known)
            print(
                f"{len(known)} of the known classes' images: accuracy {correct / len(known):.4f} "
                "(best class)",
                file=sys.stderr,
            )
