"""The training loop, read top to bottom: `train(config)`.

One epoch = shuffled global batches -> embeddings -> loss -> optimizer step; at the end of each
period (an epoch or N iterations) the loss does its periodic work (`end_period`: the vMF mean
directions are re-estimated, after a full pass over the training set for the paper's `global`
strategy). The loop talks to the loss only through its contract (vmfml.losses.base): it never
asks which loss or strategy it runs.

Under torchrun the same code runs in N processes: each takes 1/N of every global batch, the
model and the loss are wrapped in DistributedDataParallel (gradients averaged, batch norm over
the global batch), the loss's own collectives keep the mean directions identical everywhere,
process 0 writes the files. A checkpoint is written atomically after every epoch; `resume=True`
continues from it, with any number of processes, and ends with the same weights as an
uninterrupted run.

A pretrained network is validated before its first step too: fine-tuning on a few classes can
make ImageNet features worse for unseen classes (BENCHMARKS.md 5.8), and then the run keeps the
network it started from (`keep_start`) and warns.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import platform
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from vmfml import distributed
from vmfml.directions.subcentres import class_sums
from vmfml.files import write_text_atomic
from vmfml.losses import MetricLoss, create_loss
from vmfml.losses.vmf import NonFiniteEmbeddings
from vmfml.models import EmbeddingModel, create_model
from vmfml.models.inference import autocast, model_inputs, resolve_precision
from vmfml.text import plural
from vmfml.train.batches import (
    class_sums_of,
    embed_dataset,
    epoch_generator,
    in_memory,
    train_batches,
)
from vmfml.train.checkpoint import atomic_save, load_checkpoint, model_entry
from vmfml.train.config import RESUME_KEYS, RUNTIME_KEYS, TrainConfig, save_config
from vmfml.train.datasets import DataSplit, build_datasets
from vmfml.train.evaluation import evaluate_model
from vmfml.train.length import training_epochs
from vmfml.train.loggers import RunEnd, RunStart, Subscribers
from vmfml.train.memory import check_fits
from vmfml.train.open_set import (
    calibration_report,
    calibration_summary,
    embed_unknown,
    fit_run_classifier,
    open_set_report,
    trained_kappa,
)
from vmfml.train.run_folder import BEST, CHECKPOINT, CLASSIFIER, RunFolder, claim
from vmfml.train.validation import EarlyStopping, validate, validation_rank

# The largest input small_cnn gets when --image-size is not given.
SMALL_CNN_DEFAULT_MAX_SIZE = 64
# Images per forward pass of the full pass and the evaluation (no gradients: larger than training).
EVAL_BATCH = 512

_T = TypeVar("_T")


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
    mps = getattr(torch.backends, "mps", None)
    if device.type == "mps" and not (mps and mps.is_available()):
        raise ValueError(
            f"device {name!r} asked for, but MPS (Apple's GPU) is not available here; "
            "use --device cpu"
        )
    try:  # cuda:3 on a machine with one GPU, a device type this torch was not built for, ...
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0]
        raise ValueError(
            f"device {name!r} asked for, but it is not available here ({reason[:200]}); "
            "use --device cpu or auto"
        ) from None
    return device


def check_global_batch(batch_size: int, processes: int) -> None:
    """--batch-size is the global batch: each of the processes takes an equal share of it.
    (`vmfml train --nproc N` checks it before launching its processes.)"""
    if batch_size % processes:
        lower, higher = batch_size // processes * processes, -(-batch_size // processes) * processes
        nearest = f"{lower} or {higher}" if lower else f"{higher}"
        raise ValueError(
            f"--batch-size {batch_size} is the global batch, shared by {processes} processes: "
            f"it must be a multiple of {processes} (e.g. {nearest})"
        )


def build_model(config: TrainConfig, data: DataSplit) -> EmbeddingModel:
    if config.model == "small_cnn":
        image, _ = data.train[0]
        size = config.image_size or int(image.shape[-1])
        if config.image_size is None and size > SMALL_CNN_DEFAULT_MAX_SIZE:
            # A small CNN on full-size photos would be slow for nothing: shrink unless asked.
            if distributed.is_main():
                print(
                    f"small_cnn: images resized to {SMALL_CNN_DEFAULT_MAX_SIZE} px "
                    "(set --image-size to change)"
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


def build_loss(config: TrainConfig, num_classes: int) -> MetricLoss:
    """The loss of a run: every loss setting of the config reaches it (the config refuses those
    that do not apply), and --seed fixes its random start."""
    return create_loss(
        config.loss, num_classes, config.embed_dim, seed=config.seed, **config.loss_options()
    )


def build_optimizer(
    config: TrainConfig, model: nn.Module, loss: MetricLoss
) -> torch.optim.Optimizer:
    """The network's parameters at --lr, the loss's own in the groups it declares."""
    groups: list[dict[str, Any]] = [
        {"params": [p for p in model.parameters() if p.requires_grad]},
        *loss.param_groups(config.lr),
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay, nesterov=True
        )
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def build_schedule(
    optimizer: torch.optim.Optimizer, epochs: int, warmup_epochs: float, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then cosine decay to zero, per iteration (each group from its own peak)."""
    total = max(1, epochs * steps_per_epoch)
    warmup = min(total - 1, int(warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Objective(nn.Module):
    """The network and the loss as one module, so that DistributedDataParallel averages the
    gradients of both (proxies and class weights included). The network runs under autocast in
    the run's precision; the loss gets float32 embeddings."""

    def __init__(
        self, model: EmbeddingModel, loss: MetricLoss, device: torch.device, precision: str
    ) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.device = device
        self.precision = precision

    def forward(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        with autocast(self.device, self.precision):
            emb = self.model(images, normalize=self.loss.expects_normalized)
        emb = emb.to(torch.promote_types(emb.dtype, torch.float32))
        try:
            return self.loss(emb, labels), emb
        except NonFiniteEmbeddings:
            # A diverged network: the loop's NaN stop reports it, on every process at once.
            return emb.new_full((), math.nan), emb


@dataclass
class FullPass:
    """A pass of the current network over the training set, sharded over the processes: the
    class sums the `global` strategy refreshes from, or (`embeddings`, a `FullPassEmbeddings`)
    the embeddings themselves, which the vMF sub-centres cluster. Remembers the step of its last
    class sums, so that the final evaluation reuses them when the network has not moved since."""

    model: EmbeddingModel
    data: DataSplit
    device: torch.device
    config: TrainConfig
    precision: str
    step: int = 0
    last: tuple[int, Tensor, Tensor] | None = None

    def __call__(self) -> tuple[Tensor, Tensor]:
        sums, counts = self._over_training_set(class_sums_of)
        self.last = (self.step, sums, counts)
        return sums, counts

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Unit embeddings [N, D] (CPU) and labels [N] of the whole training set, on every
        process; their class sums become the last result, as a call's would."""
        features, labels = self._over_training_set(embed_dataset, desc="full pass")
        x = F.normalize(features.to(torch.float64), dim=1)
        sums, counts = class_sums(x, labels, len(self.data.train.class_names))
        self.last = (self.step, sums.to(self.device), counts.to(self.device))
        return x, labels

    def _over_training_set(self, run: Callable[..., _T], **options: Any) -> _T:
        """`run` (class_sums_of or embed_dataset) over the training set with this pass's
        network, device, batch size, loader workers, progress bar and precision."""
        return run(
            self.model,
            self.data.train,
            dict(self.model.preprocessing),
            self.device,
            EVAL_BATCH,
            self.config.num_workers,
            self.config.progress,
            precision=self.precision,
            **options,
        )

    def sums_at(self, step: int) -> tuple[Tensor, Tensor] | None:
        """The last result if it was computed after step `step`, else None."""
        if self.last is None or self.last[0] != step:
            return None
        return self.last[1], self.last[2]


def train(config: TrainConfig, resume: bool = False, folder: RunFolder | None = None) -> RunResult:
    """Train as configured; under torchrun, as one of its processes.

    `folder`: the run folder, already claimed by the caller (`vmfml train` claims it before its
    checks); without it, the run claims its folder here (`vmfml.train.run_folder`).
    """
    if folder is None:
        owner = os.environ.get("RANK", "0") == "0"
        with claim(Path(config.out_dir), owner=owner) as claimed:
            return train(config, resume, claimed)
    folder.started = folder.started or resume  # a resumed run has its checkpoint already
    # The subscribers: history.json, the plots and the loggers of --log-to (process 0 only),
    # refused before the data loads when they cannot run, told how the run ended when it fails.
    with (
        distributed.setup(resolve_device(config.device)) as device,
        Subscribers(config, distributed.is_main()) as subscribers,
    ):
        return _train(config, resume, device, folder, subscribers)


def _train(
    config: TrainConfig,
    resume: bool,
    device: torch.device,
    folder: RunFolder,
    subscribers: Subscribers,
) -> RunResult:
    out = Path(config.out_dir)
    main = distributed.is_main()
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    precision = resolve_precision(config.precision, device)
    world = distributed.world_size()
    check_global_batch(config.batch_size, world)

    data = build_datasets(config)
    _check_eval_ks(config.eval_ks, data)
    model = build_model(config, data)
    batch = min(config.batch_size, len(data.train))
    check_fits(
        model,
        tuple(model.preprocessing["input_size"]),
        images_per_step=batch // world,
        eval_batch=EVAL_BATCH,
        bytes_per_element={"64": 8, "bf16": 2, "fp16": 2}.get(precision, 4),
        device=device,
        what=f"--model {config.model}",
    )
    model = model.to(device)
    if config.freeze_bn and config.starts_pretrained:
        model.freeze_batchnorm()  # before the optimizer is built: its parameters stay out
    if device.type == "cuda":
        # In-memory images live on the GPU for the whole run: no host-to-device copy per batch.
        for part in (data.train, data.test, data.gallery):
            if part is not None and in_memory(part):
                part.images = part.images.to(device)
    preprocessing = dict(model.preprocessing)
    loss = build_loss(config, data.num_classes).to(device)
    if precision == "64":
        model.double()
        loss.double()
    optimizer = build_optimizer(config, model, loss)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    steps_per_epoch = max(1, len(data.train) // batch)
    epochs = training_epochs(config.epochs, steps_per_epoch)
    schedule = build_schedule(optimizer, epochs, config.warmup_epochs, steps_per_epoch)
    period = None if config.refresh_period == "epoch" else int(config.refresh_period)
    full_pass = FullPass(model, data, device, config, precision)

    objective: nn.Module = Objective(model, loss, device, precision)
    if distributed.is_distributed():
        distributed.sync_batchnorm(model, device)
        with warnings.catch_warnings():
            # Deprecated for forward_sync_buffers, which still syncs the buffers at the start.
            warnings.simplefilter("ignore", FutureWarning)
            objective = DistributedDataParallel(
                objective,
                device_ids=[device.index] if device.type == "cuda" else None,
                # Mean-direction accumulators differ between processes until a refresh sums them.
                broadcast_buffers=False,
            )

    history: list[dict[str, Any]] = []
    start_epoch, step = 0, 0
    stopper = EarlyStopping(config.patience)
    best: dict[str, Any] | None = None  # the kept epoch's checkpoint (validation only)
    # Validation of the network before training (a pretrained one only).
    before: dict[str, float] | None = None
    ckpt_path = out / CHECKPOINT

    def snapshot(epoch: int, stop_reason: str | None) -> dict[str, Any]:
        """The run's state after `epoch` epochs (0: before training): checkpoint.pt's content."""
        return {
            "format": "vmfml-checkpoint",
            "version": 1,
            "model": model_entry(model),
            "class_names": list(data.train.class_names),
            "loss": {
                "name": config.loss,
                "options": config.loss_options(),
                "state_dict": loss.checkpoint_state(),  # on every process: it may sum over them
                "num_classes": data.num_classes,
            },
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": epoch,
            "epochs": epochs,
            "step": step,
            "history": history,
            "before_training": before,
            "early_stopping": stopper.state(),
            "stop_reason": stop_reason,
            "config": config.to_dict(),
        }

    if resume:
        start_epoch, step, history, stopper_state, before = _restore(
            ckpt_path, config, model, loss, optimizer, schedule
        )
        if stopper_state is not None:
            stopper.load(stopper_state)
        if (out / BEST).is_file():
            best = load_checkpoint(out / BEST)
        if main:
            print(f"resumed from {ckpt_path} after epoch {start_epoch}")
    else:
        if main:
            folder.remove_run_files()
            folder.write("config.yaml", lambda path: save_config(config, path))
        loss.start(full_pass)
    subscribers.start(RunStart(config, out, list(history), resume, folder))
    if main:
        print(_describe_run(config, data, model, device, precision, world, epochs, steps_per_epoch))
    if not resume and data.val is not None and config.starts_pretrained:
        before = validate(
            model, loss, data.val, data.disjoint, device, precision, config.num_workers
        )
        if main:
            print(f"before training: {_summary(before)}", flush=True)
        if config.keep_start and stopper.update(before, 0):
            best = _in_memory(snapshot(0, None))
            if main:
                folder.write(BEST, functools.partial(atomic_save, _kept(best)))

    started = time.monotonic()
    stop_reason = _stop_reason(stopper, started, config.max_minutes, start_epoch, epochs)
    epoch = start_epoch
    while stop_reason is None:
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
        # Sums over all processes: loss x images, correct classifications, images.
        totals = torch.zeros(3, dtype=torch.float64)
        refresh_s = 0.0
        bar = tqdm(
            batches,
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1}/{epochs}",
            disable=None if config.progress and main else True,  # None: off when not a terminal
            leave=False,
        )
        start = time.perf_counter()
        for images, labels in bar:
            images = model_inputs(images, device, precision)
            labels = labels.to(device, non_blocking=True)
            value, emb = objective(images, labels)
            stats = _step_stats(loss, value, emb, labels)
            if not math.isfinite(stats[0]):
                raise TrainingDiverged(
                    f"the loss became {stats[0]} at epoch {epoch + 1}, iteration {step + 1}; "
                    f"the last good checkpoint ({ckpt_path}, epoch {epoch}) is kept. "
                    "Lower --lr or --kappa, then resume with --resume (both may change on resume)."
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(value).backward()
            _optimizer_step(scaler, optimizer, config.lr, epoch, step, ckpt_path)
            scaler.update()
            schedule.step()
            step += 1
            totals += stats
            if period is not None and step % period == 0:
                refresh_s += _end_period(loss, full_pass, step)
            bar.set_postfix(loss=f"{totals[0] / totals[2]:.4f}")
        train_s = time.perf_counter() - start - refresh_s
        if period is None:
            refresh_s += _end_period(loss, full_pass, step)
        epoch += 1

        seen = float(totals[2])
        record: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": float(totals[0]) / max(1.0, seen),
            "train_accuracy": float(totals[1]) / max(1.0, seen) if loss.has_classifier else None,
            "lr": schedule.get_last_lr()[0],
            **loss.log_values(),
            "train_seconds": train_s,
            "refresh_seconds": refresh_s,
            "images_per_second": seen / train_s if train_s > 0 else None,
        }
        improved = False
        if data.val is not None and _validate_now(config.eval_every, epoch, epochs):
            record.update(
                validate(
                    model, loss, data.val, data.disjoint, device, precision, config.num_workers
                )
            )
            improved = stopper.update(record, epoch)
        history.append(record)
        stop_reason = _stop_reason(stopper, started, config.max_minutes, epoch, epochs)
        ckpt = snapshot(epoch, stop_reason)
        _check_finite({**model.state_dict(), **ckpt["loss"]["state_dict"]}, epoch - 1, ckpt_path)
        if improved:
            # Every process keeps the best weights in memory, as every process ends with them.
            best = _in_memory(ckpt)
        if main:
            folder.write(CHECKPOINT, functools.partial(atomic_save, ckpt))
            if improved:
                folder.write(BEST, functools.partial(atomic_save, _kept(ckpt)))
            print(f"epoch {epoch}/{epochs}: {_summary(record)}", flush=True)
        subscribers.epoch(record)

    kept = _keep(model, loss, best, stopper, epoch, stop_reason, data.val is not None)
    if before is not None:
        trained = _best_trained_epoch(history)
        kept["val_score_before_training"] = before["val_score"]
        kept["training_helped"] = trained is not None and (
            validation_rank(trained) > validation_rank(before)
        )
    if main:
        print(kept["report"], flush=True)
        if before is not None and not kept["training_helped"]:
            warnings.warn(
                _not_helped(before["val_score"], trained, config.keep_start), stacklevel=3
            )
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
        progress=config.progress and main,
        train_sums=full_pass.sums_at(step) if kept["epoch"] == epoch else None,
        gallery_set=data.gallery,
        precision=precision,
    )
    # What `vmfml classify` needs beside the network (every process embeds its shard).
    classifier = fit_run_classifier(
        model, data, device, progress=config.progress and main, precision=precision
    )
    unknown = None
    if data.unknown is not None:  # --split open-set: the held-out classes' images
        unknown = embed_unknown(
            model, data.unknown, device, progress=config.progress and main, precision=precision
        )
    if not main:
        return RunResult(metrics={}, history=history, out_dir=out)
    folder.write(CLASSIFIER, classifier.save)
    calibration = None
    if not data.disjoint:
        calibration = calibration_report(classifier, (test_emb, test_labels), trained_kappa(loss))
        metrics["calibration"] = calibration_summary(calibration)
    if unknown is not None:
        metrics["open_set"] = open_set_report(classifier, (test_emb, test_labels), unknown)
    metrics["kept"] = kept
    if before is not None:
        metrics["before_training"] = before
    metrics["timing"] = _timing(history)
    metrics["run"] = {
        "config": config.to_dict(),
        "epochs": epochs,
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, {device}",
        "processes": world,
        "precision": precision,
        "torch": torch.__version__,
    }
    folder.write(
        "metrics.json", lambda path: write_text_atomic(path, json.dumps(metrics, indent=2))
    )
    tested = (test_emb, test_labels, list(data.test.class_names))
    subscribers.end(RunEnd(metrics, history, kept["epoch"], before, tested, calibration))
    return RunResult(metrics=metrics, history=history, out_dir=out)


def _describe_run(
    config: TrainConfig,
    data: DataSplit,
    model: EmbeddingModel,
    device: torch.device,
    precision: str,
    world: int,
    epochs: int,
    steps_per_epoch: int,
) -> str:
    """The settings that shape the run, printed at its start."""
    size = model.preprocessing["input_size"]
    if data.val is None:
        val = "no validation (the last epoch is kept)"
    elif data.disjoint:
        val = (
            f"validation: {plural(len(data.val), 'image')} of "
            f"{plural(len(data.val.class_names), 'held-out class', 'held-out classes')}"
        )
    else:
        val = f"validation: {plural(len(data.val), 'image')}"
    length = "auto, " if config.epochs is None else ""
    # A folder smaller than a batch trains on one batch of all its images (batches.train_batches).
    batch = min(config.batch_size, len(data.train))
    whole = f": all the training images, fewer than --batch-size {config.batch_size}"
    lines = [
        f"data: {config.data}: {plural(len(data.train), 'training image')} of "
        f"{plural(data.num_classes, 'class', 'classes')}, {val}, "
        f"{plural(len(data.test), 'test image')} ({'unseen classes' if data.disjoint else 'same classes'})",
        f"length: {plural(epochs, 'epoch')} ({length}{plural(steps_per_epoch, 'step')} of "
        f"{plural(batch, 'image')}{whole if batch < config.batch_size else ' each'}; "
        f"{plural(epochs * steps_per_epoch, 'step')} in all)"
        + (f", at most {config.max_minutes:g} minutes" if config.max_minutes else ""),
        f"model: {config.model} at {size[1]}x{size[2]} px, {config.embed_dim}-d embeddings; "
        f"loss: {config.loss}" + (f" ({config.directions})" if config.loss == "vmf" else ""),
        f"augment: {config.augment}"
        + (" (wrong for digits and text: use --augment none)" if "flip" in config.augment else ""),
        f"device: {device}, precision {precision}" + (f", {world} processes" if world > 1 else ""),
    ]
    return "\n".join(lines)


def _summary(record: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in record.items() if isinstance(v, float))


def _in_memory(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A copy of a checkpoint's model and loss that training does not change."""
    return {**ckpt, "model": copy.deepcopy(ckpt["model"]), "loss": copy.deepcopy(ckpt["loss"])}


def _best_trained_epoch(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The record of the best validated epoch in `history`, by `EarlyStopping`'s rule but
    without the network before training; None when no epoch was validated."""
    replay, best = EarlyStopping(patience=0), None
    for record in history:
        if "val_score" in record and replay.update(record, record["epoch"]):
            best = record
    return best


def _not_helped(before: float, trained: dict[str, Any] | None, kept_start: bool) -> str:
    """The warning of a run whose best trained epoch (its record) did not beat the pretrained
    network's validation score `before`."""
    best = (
        f"the best trained epoch scored {trained['val_score']:.4f} (epoch {trained['epoch']})"
        if trained
        else "no trained epoch was validated"
    )
    kept = (
        "the network before training is kept (best.pt, epoch 0; --keep-start false keeps the "
        "best trained epoch instead)"
        if kept_start
        else "the best trained epoch is kept (--keep-start false)"
    )
    return (
        f"training did not beat the pretrained network on validation: it scored "
        f"{before:.4f} before training and {best}. What it learnt of the "
        f"training classes did not carry over to the held-out ones; {kept}. A lower --lr, "
        "fewer epochs or more classes may help."
    )


def _validate_now(every: int, epoch: int, epochs: int) -> bool:
    return epoch == epochs or (every > 0 and epoch % every == 0)


def _stop_reason(
    stopper: EarlyStopping, started: float, max_minutes: float | None, epoch: int, epochs: int
) -> str | None:
    """Why training ends after `epoch` (None: it goes on)."""
    if epoch >= epochs:
        return "the only epoch done" if epochs == 1 else f"all {epochs} epochs done"
    # The first half of the schedule trains at a high learning rate, where validation scores
    # swing from epoch to epoch: stopping is considered only in the second half.
    if stopper.should_stop and 2 * epoch >= epochs:
        return (
            f"early stop: no better validation score for {plural(stopper.stale, 'epoch')} "
            f"(--patience {stopper.patience})"
        )
    if max_minutes is not None and time.monotonic() - started > 60 * max_minutes:
        return f"time cap: --max-minutes {max_minutes:g} passed"
    return None


def _kept(ckpt: dict[str, Any]) -> dict[str, Any]:
    """best.pt: the kept epoch's model and loss (not the optimizer: it is not for resuming)."""
    drop = ("optimizer", "schedule", "scaler")
    return {k: v for k, v in ckpt.items() if k not in drop}


def _keep(
    model: nn.Module,
    loss: MetricLoss,
    best: dict[str, Any] | None,
    stopper: EarlyStopping,
    last_epoch: int,
    stop_reason: str | None,
    validated: bool,
) -> dict[str, Any]:
    """Load the epoch to keep into model and loss; returns what was kept and why."""
    if not validated or best is None:
        return {
            "epoch": last_epoch,
            "reason": stop_reason,
            "report": f"kept the last epoch, {last_epoch} ({stop_reason}; no validation)",
        }
    model.load_state_dict(best["model"]["state_dict"])
    loss.restore_state(best["loss"]["state_dict"])
    what = "the network before training" if stopper.best_epoch == 0 else "it"
    return {
        "epoch": stopper.best_epoch,
        "reason": stop_reason,
        "val_score": stopper.best_score,
        "report": f"kept epoch {stopper.best_epoch} of {last_epoch} ({stop_reason}): the best "
        f"validation score, {stopper.best_score:.4f}; the test set is evaluated on {what}",
    }


def _check_eval_ks(ks: tuple[int, ...], data: DataSplit) -> None:
    """Recall@K needs K neighbours per query: refused before training, not after it."""
    if data.gallery is None:
        available, what = len(data.test) - 1, f"the test set has {len(data.test)} images"
        what += " (a query is not its own neighbour)"
    else:
        available, what = len(data.gallery), f"the gallery has {len(data.gallery)} images"
    if max(ks) > available:
        raise ValueError(
            f"--eval-ks {','.join(map(str, ks))}: Recall@{max(ks)} needs {max(ks)} neighbours per "
            f"query but {what}; use K <= {available}"
        )


def _step_stats(loss: MetricLoss, value: Tensor, emb: Tensor, labels: Tensor) -> Tensor:
    """(loss x images, correct, images) of this step summed over all processes: one small
    all-reduce, so a NaN on any process stops every process at the same step."""
    n = len(labels)
    correct = 0.0
    # A diverged step has no logits to count (the loss refuses its rows): its NaN loss stops it.
    if loss.has_classifier and math.isfinite(value.item()):
        with torch.no_grad():
            correct = float((loss.logits(emb.detach()).argmax(1) == labels).sum())
    local = torch.tensor([value.item() * n, correct, n], dtype=torch.float64)
    return distributed.all_sum(local)


def _optimizer_step(
    scaler: torch.amp.GradScaler,
    optimizer: torch.optim.Optimizer,
    lr: float,
    epoch: int,
    step: int,
    ckpt_path: Path,
) -> None:
    """One optimizer step; a step too large for the weights' float type (an absurd --lr such as
    1e300) is a divergence like a NaN loss, not a crash."""
    try:
        scaler.step(optimizer)
    except RuntimeError as err:
        if "overflow" not in str(err):
            raise
        raise TrainingDiverged(
            f"the optimizer step at epoch {epoch + 1}, iteration {step + 1} overflowed the "
            f"weights' number type (--lr {lr:g}); the last good checkpoint ({ckpt_path}, epoch "
            f"{epoch}) is kept. Lower --lr, then resume with --resume (it may change on resume)."
        ) from err


def _end_period(loss: MetricLoss, full_pass: FullPass, step: int) -> float:
    """The loss's end-of-period work; returns its seconds."""
    start = time.perf_counter()
    full_pass.step = step
    loss.end_period(full_pass)
    return time.perf_counter() - start


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


def _check_finite(state: dict[str, Tensor], epoch: int, ckpt_path: Path) -> None:
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise TrainingDiverged(
                f"{name} holds NaN or infinite values after epoch {epoch + 1}; "
                f"the last good checkpoint ({ckpt_path}, epoch {epoch}) is kept."
            )


def resumable(out_dir: str | Path, config: TrainConfig) -> bool:
    """Whether `out_dir` holds a checkpoint that `train(config, resume=True)` would continue.

    False for no checkpoint, an unreadable one, or one saved with other settings.
    """
    path = Path(out_dir) / CHECKPOINT
    if not path.is_file():
        return False
    try:
        saved = load_checkpoint(path)["config"]
    except Exception:  # a torn or foreign file: the run starts afresh and replaces it
        return False
    return not _changed_settings(saved, config)


def _changed_settings(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """The settings of `config` that differ from a checkpoint's and may not change on resume."""
    current = config.to_dict()
    fixed = RUNTIME_KEYS | RESUME_KEYS
    changed = [k for k in current if k not in fixed and k in saved and saved[k] != current[k]]
    if config.learn_kappa and saved.get("kappa", config.kappa) != config.kappa:
        changed.append("kappa")  # a learned kappa is state: --kappa only set its start
    return changed


def check_resumable(path: Path, config: TrainConfig, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint at `path`, if `config` may continue it; else a ValueError saying why.
    (`vmfml train --resume` asks before loading any data, with `mmap=True`: a cheap look.)"""
    if not path.is_file():
        raise FileNotFoundError(
            f"--resume: no checkpoint at {path}; start the run without --resume"
        )
    ckpt = load_checkpoint(path, mmap=mmap)
    saved = ckpt.get("config")
    if not isinstance(saved, dict):
        raise ValueError(f"--resume: {path} is a vmfml checkpoint but not of a training run")
    current = config.to_dict()
    changed = _changed_settings(saved, config)
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in changed)
        raise ValueError(
            f"--resume: the config differs from the checkpoint's ({diffs}); resume with the same "
            f"settings (only {', '.join(sorted(RESUME_KEYS))} may change)"
        )
    return ckpt


def _restore(
    path: Path,
    config: TrainConfig,
    model: nn.Module,
    loss: MetricLoss,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LambdaLR,
) -> tuple[int, int, list[dict[str, Any]], dict[str, Any] | None, dict[str, float] | None]:
    """Load a checkpoint into the run: (epoch, step, history, early stopping, validation before training)."""
    ckpt = check_resumable(path, config)
    saved = ckpt["config"]
    model.load_state_dict(ckpt["model"]["state_dict"])
    # A fixed kappa is a setting, so the loss keeps the one it was built with (--kappa).
    loss.restore_state(ckpt["loss"]["state_dict"])
    optimizer.load_state_dict(ckpt["optimizer"])
    schedule.load_state_dict(ckpt["schedule"])
    ratio = config.lr / float(saved.get("lr", config.lr))
    if ratio != 1.0:
        # A new --lr scales the rest of the schedule of every group (the loss's own included).
        schedule.base_lrs = [lr * ratio for lr in schedule.base_lrs]
        for group in optimizer.param_groups:
            group["initial_lr"] *= ratio
            group["lr"] *= ratio
    history = list(ckpt["history"])
    return (
        int(ckpt["epoch"]),
        int(ckpt["step"]),
        history,
        ckpt.get("early_stopping"),
        ckpt.get("before_training"),
    )
