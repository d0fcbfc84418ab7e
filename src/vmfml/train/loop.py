"""The training loop, read top to bottom: `train(config)`.

One epoch = shuffled batches -> embeddings -> loss -> SGD step; the vMF mean directions are
refreshed at the end of each period (an epoch or N iterations), after a full pass over the
training set for the paper's `global` strategy. A checkpoint is written atomically after every
epoch; `resume=True` continues from it and ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import platform
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from vmfml.losses import create_loss
from vmfml.models import EmbeddingModel, create_model
from vmfml.train.batches import (
    embed_dataset,
    epoch_generator,
    eval_batches,
    in_memory,
    train_batches,
)
from vmfml.train.checkpoint import atomic_save, load_checkpoint, model_entry
from vmfml.train.config import TrainConfig, save_config
from vmfml.train.datasets import DataSplit, build_datasets
from vmfml.train.evaluation import class_sums, evaluate_model

CHECKPOINT = "checkpoint.pt"
# Settings that may differ between a run and its resumption without changing its result.
# The largest input small_cnn gets when --image-size is not given.
SMALL_CNN_DEFAULT_MAX_SIZE = 64
RUNTIME_KEYS = {"device", "num_workers", "threads", "progress", "plots", "out_dir", "eval_every"}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class RunResult:
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    out_dir: Path = Path(".")


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an unavailable device is refused by name."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r}; use cpu, cuda, cuda:N, mps or auto") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {name!r} asked for, but CUDA is not available here; use --device cpu"
        )
    return device


def build_model(config: TrainConfig, data: DataSplit) -> EmbeddingModel:
    if config.model == "small_cnn":
        image, _ = data.train[0]
        size = config.image_size or int(image.shape[-1])
        if config.image_size is None and size > SMALL_CNN_DEFAULT_MAX_SIZE:
            # A small CNN on full-size photos would be slow for nothing: shrink unless asked.
            print(
                f"small_cnn: images resized to {SMALL_CNN_DEFAULT_MAX_SIZE} px (set --image-size to change)"
            )
            size = SMALL_CNN_DEFAULT_MAX_SIZE
        return create_model(
            "small_cnn",
            embed_dim=config.embed_dim,
            depth=config.depth,
            width=config.width,
            in_chans=int(image.shape[0]),
            input_size=size,
        )
    opts: dict[str, Any] = {"pretrained": config.pretrained}
    if config.weights:
        opts["weights"] = config.weights
    if config.image_size:
        opts["input_size"] = config.image_size
    return create_model(config.model, embed_dim=config.embed_dim, **opts)


def loss_options(config: TrainConfig) -> dict[str, Any]:
    if config.loss != "vmf":
        return {}
    opts: dict[str, Any] = {
        "directions": config.directions,
        "kappa": config.kappa,
        "learn_kappa": config.learn_kappa,
    }
    if config.directions == "ema":
        opts["momentum"] = config.ema_momentum
    if config.directions in ("global", "accumulate", "ema"):
        opts["init_seed"] = config.seed
    return opts


def build_optimizer(
    config: TrainConfig, model: torch.nn.Module, loss: torch.nn.Module
) -> torch.optim.Optimizer:
    groups: list[dict[str, Any]] = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    loss_params = [p for p in loss.parameters() if p.requires_grad]
    if loss_params:
        # Proxy and class-weight losses ask for a faster learning rate on their own parameters.
        groups.append(
            {"params": loss_params, "lr": config.lr * getattr(loss, "lr_multiplier", 1.0)}
        )
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay, nesterov=True
        )
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def build_schedule(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay to zero, per iteration."""
    total = max(1, config.epochs * steps_per_epoch)
    warmup = min(total - 1, int(config.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def refresh_directions(
    loss: torch.nn.Module,
    model: torch.nn.Module,
    data: DataSplit,
    preprocessing: dict[str, Any],
    device: torch.device,
    config: TrainConfig,
) -> tuple[float, torch.Tensor | None]:
    """End of a period: re-estimate the mean directions. Returns (seconds, full-pass features or None)."""
    directions = getattr(loss, "directions", None)
    if directions is None:
        return 0.0, None
    start = time.perf_counter()
    feats = None
    if directions.needs_full_pass:
        feats, labels = embed_dataset(
            model,
            data.train,
            preprocessing,
            device,
            512,
            config.num_workers,
            config.progress,
            "global pass",
        )
        sums, counts = class_sums(feats, labels, data.num_classes)
        directions.refresh(sums.to(device), counts.to(device))
    else:
        directions.refresh()
    return time.perf_counter() - start, feats


@torch.inference_mode()
def test_accuracy(
    model: EmbeddingModel,
    loss: Any,
    data: DataSplit,
    preprocessing: dict[str, Any],
    device: torch.device,
    config: TrainConfig,
) -> float | None:
    """Quick per-epoch accuracy from the loss's own classifier (None when it has none)."""
    if data.disjoint or not getattr(loss, "has_classifier", False):
        return None
    model.eval()
    correct = 0
    for images, labels in eval_batches(data.test, 512, preprocessing, config.num_workers):
        emb = model(images.to(device), normalize=getattr(loss, "expects_normalized", True))
        correct += int((loss.logits(emb).argmax(1).cpu() == labels).sum())
    model.train()
    return correct / len(data.test)


def train(config: TrainConfig, resume: bool = False) -> RunResult:
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    seed_everything(config.seed)

    data = build_datasets(config)
    model = build_model(config, data).to(device)
    if device.type == "cuda":
        # In-memory images live on the GPU for the whole run: no host-to-device copy per batch.
        for part in (data.train, data.test, data.gallery):
            if part is not None and in_memory(part):
                part.images = part.images.to(device)
    preprocessing = dict(model.preprocessing)
    loss: Any = create_loss(
        config.loss, data.num_classes, config.embed_dim, **loss_options(config)
    ).to(device)
    optimizer = build_optimizer(config, model, loss)
    steps_per_epoch = max(1, len(data.train) // min(config.batch_size, len(data.train)))
    schedule = build_schedule(optimizer, config, steps_per_epoch)
    period = None if config.refresh_period == "epoch" else int(config.refresh_period)

    history: list[dict[str, Any]] = []
    start_epoch, step = 0, 0
    ckpt_path = out / CHECKPOINT
    if resume:
        start_epoch, step, history = _restore(ckpt_path, config, model, loss, optimizer, schedule)
        print(f"resumed from {ckpt_path} after epoch {start_epoch}")
    else:
        save_config(config, out / "config.yaml")
        directions = getattr(loss, "directions", None)
        if directions is not None and directions.needs_full_pass and config.global_init == "data":
            # The paper's global structure learning starts from the data's own mean directions
            # (with global_init "random" it starts from the random ones drawn at construction).
            refresh_directions(loss, model, data, preprocessing, device, config)

    last_train_feats = None
    for epoch in range(start_epoch, config.epochs):
        model.train()
        loss.train()
        gen = epoch_generator(config.seed, epoch)
        # Dropout and friends draw from the global generator: reseed it per epoch for exact resumes.
        torch.manual_seed(
            int(torch.randint(0, 2**62, (1,), generator=epoch_generator(config.seed, -1 - epoch)))
        )
        batches = train_batches(
            data.train, config.batch_size, preprocessing, config.augment, gen, config.num_workers
        )
        totals = {"loss": 0.0, "correct": 0, "seen": 0, "refresh_s": 0.0}
        bar = tqdm(
            batches,
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=None if config.progress else True,  # None: off when not a terminal
            leave=False,
        )
        start = time.perf_counter()
        for images, labels in bar:
            images, labels = (
                images.to(device, non_blocking=True),
                labels.to(device, non_blocking=True),
            )
            emb = model(images, normalize=getattr(loss, "expects_normalized", True))
            value = loss(emb, labels)
            if not torch.isfinite(value):
                raise TrainingDiverged(
                    f"the loss became {value.item()} at epoch {epoch + 1}, iteration {step + 1}; "
                    f"the last good checkpoint ({ckpt_path}, epoch {epoch}) is kept. "
                    "Lower --lr or --kappa, then resume with --resume."
                )
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            schedule.step()
            step += 1
            totals["loss"] += value.item() * len(labels)
            totals["seen"] += len(labels)
            if getattr(loss, "has_classifier", False):
                with torch.no_grad():
                    totals["correct"] += int((loss.logits(emb.detach()).argmax(1) == labels).sum())
            if period is not None and step % period == 0:
                seconds, _ = refresh_directions(loss, model, data, preprocessing, device, config)
                totals["refresh_s"] += seconds
            bar.set_postfix(loss=f"{totals['loss'] / totals['seen']:.4f}")
        train_s = time.perf_counter() - start - totals["refresh_s"]
        if period is None:
            seconds, last_train_feats = refresh_directions(
                loss, model, data, preprocessing, device, config
            )
            totals["refresh_s"] += seconds
        else:
            last_train_feats = None

        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": totals["loss"] / max(1, totals["seen"]),
            "train_accuracy": totals["correct"] / max(1, totals["seen"])
            if getattr(loss, "has_classifier", False)
            else None,
            "lr": schedule.get_last_lr()[0],
            "kappa": float(loss.kappa) if hasattr(loss, "kappa") else None,
            "train_seconds": train_s,
            "refresh_seconds": totals["refresh_s"],
            "images_per_second": totals["seen"] / train_s if train_s > 0 else None,
        }
        last = epoch + 1 == config.epochs
        if config.eval_every and ((epoch + 1) % config.eval_every == 0 or last):
            record["test_accuracy"] = test_accuracy(
                model, loss, data, preprocessing, device, config
            )
        history.append(record)
        _check_finite(model, loss, epoch, ckpt_path)
        atomic_save(
            {
                "format": "vmfml-checkpoint",
                "version": 1,
                "model": model_entry(model),
                "class_names": list(data.train.class_names),
                "loss": {
                    "name": config.loss,
                    "options": loss_options(config),
                    "state_dict": loss.state_dict(),
                    "num_classes": data.num_classes,
                },
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "epoch": epoch + 1,
                "step": step,
                "history": history,
                "config": config.to_dict(),
            },
            ckpt_path,
        )
        summary = ", ".join(f"{k} {v:.4g}" for k, v in record.items() if isinstance(v, float))
        print(f"epoch {epoch + 1}/{config.epochs}: {summary}", flush=True)

    metrics, test_emb, test_labels = evaluate_model(
        model,
        loss,
        data.train,
        data.test,
        preprocessing,
        device,
        config.eval_ks,
        data.disjoint,
        num_workers=config.num_workers,
        progress=config.progress,
        train_features=last_train_feats,
        gallery_set=data.gallery,
    )
    metrics["timing"] = _timing(history)
    metrics["run"] = {
        "config": config.to_dict(),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {device}",
        "torch": torch.__version__,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "history.json").write_text(json.dumps(history, indent=2))
    if config.plots:
        from vmfml.train.plots import plot_embedding, plot_history

        plot_history(history, out / "training_curves.png")
        class_names = data.test.class_names
        plot_embedding(test_emb, test_labels, class_names, out / "embedding.png", seed=config.seed)
    return RunResult(metrics=metrics, history=history, out_dir=out)


def _timing(history: list[dict[str, Any]]) -> dict[str, float]:
    train_s = sum(r["train_seconds"] for r in history)
    refresh_s = sum(r["refresh_seconds"] for r in history)
    ips = [r["images_per_second"] for r in history if r["images_per_second"]]
    return {
        "train_seconds": train_s,
        "refresh_seconds": refresh_s,
        "epoch_seconds_mean": (train_s + refresh_s) / max(1, len(history)),
        "images_per_second": float(np.mean(ips)) if ips else 0.0,
    }


def _check_finite(
    model: torch.nn.Module, loss: torch.nn.Module, epoch: int, ckpt_path: Path
) -> None:
    for name, tensor in [*model.state_dict().items(), *loss.state_dict().items()]:
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise TrainingDiverged(
                f"{name} holds NaN or infinite values after epoch {epoch + 1}; "
                f"the last good checkpoint ({ckpt_path}, epoch {epoch}) is kept."
            )


def _restore(
    path: Path,
    config: TrainConfig,
    model: torch.nn.Module,
    loss: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LambdaLR,
) -> tuple[int, int, list[dict[str, Any]]]:
    if not path.is_file():
        raise FileNotFoundError(
            f"--resume: no checkpoint at {path}; start the run without --resume"
        )
    ckpt = load_checkpoint(path)
    saved = ckpt["config"]
    current = config.to_dict()
    changed = [k for k in current if k not in RUNTIME_KEYS and saved.get(k) != current[k]]
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise ValueError(
            f"--resume: the config differs from the checkpoint's ({diffs}); resume with the same settings"
        )
    model.load_state_dict(ckpt["model"]["state_dict"])
    loss.load_state_dict(ckpt["loss"]["state_dict"])
    optimizer.load_state_dict(ckpt["optimizer"])
    schedule.load_state_dict(ckpt["schedule"])
    return int(ckpt["epoch"]), int(ckpt["step"]), list(ckpt["history"])
