"""Batches for training and evaluation, reproducible from (seed, epoch) alone.

Every random choice of an epoch (order, augmentation, worker seeds) comes from a generator seeded
with the run's seed and the epoch number, so a run resumed at an epoch boundary replays exactly
what an uninterrupted run would have done, with any number of processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from vmfml.data.transforms import TransformedDataset, make_transform, prepare_batch
from vmfml.directions import compute_class_sums
from vmfml.distributed import gather_rows, is_main, rank, shard_rows, world_size
from vmfml.models.inference import embed_batches


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def in_memory(dataset: Any) -> bool:
    return isinstance(getattr(dataset, "images", None), torch.Tensor)


def train_batches(
    dataset: Any,
    batch_size: int,
    preprocessing: dict[str, Any],
    augment: str,
    generator: torch.Generator,
    num_workers: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This process's share of shuffled batches: `[B / W, C, H, W]` float images and labels.

    `batch_size` B is the global batch, one optimizer step over all W processes; the order and
    the augmentation come from `generator` alone, the same on every process, and process r takes
    the r-th contiguous chunk of each global batch. So W processes see together exactly the
    batches one process would. The last partial batch is dropped.
    """
    n = len(dataset)
    world, r = world_size(), rank()
    # A set smaller than the batch is one batch: of as many images as the processes share equally.
    batch_size = min(batch_size, n - n % world)
    if batch_size % world:
        raise ValueError(
            f"the batch size {batch_size} must be a multiple of the number of processes ({world})"
        )
    mine = slice(r * batch_size // world, (r + 1) * batch_size // world)
    order = torch.randperm(n, generator=generator)
    global_batches = [order[s : s + batch_size] for s in range(0, n - batch_size + 1, batch_size)]
    if in_memory(dataset):
        for idx in global_batches:
            # Augmentation draws for the whole global batch, so the draws do not depend on W.
            images = prepare_batch(
                dataset.images[idx.to(dataset.images.device)], preprocessing, augment, generator
            )
            yield images[mine], dataset.labels[idx][mine]
        return
    # Images are prepared one by one, each by the process (and worker) that reads it: each draws
    # its augmentation from a seed of its own, drawn here for every image, the same on every
    # process, so neither W nor the number of workers changes the draws.
    seeds = torch.randint(0, 2**62, (n,), generator=generator)
    transform = make_transform(preprocessing, train=True, augment=augment)
    loader = DataLoader(
        TransformedDataset(dataset, transform, seeds),
        batch_sampler=[idx[mine].tolist() for idx in global_batches],
        num_workers=num_workers,
        generator=generator,
        persistent_workers=False,
    )
    yield from loader


def eval_batches(
    dataset: Any,
    batch_size: int,
    preprocessing: dict[str, Any],
    num_workers: int = 0,
    rows: range | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The images of `rows` (default: all) in order, without augmentation."""
    rows = range(len(dataset)) if rows is None else rows
    if in_memory(dataset):
        for start in range(rows.start, rows.stop, batch_size):
            end = min(rows.stop, start + batch_size)
            images = prepare_batch(dataset.images[start:end], preprocessing, "none", None)
            yield images, dataset.labels[start:end]
        return
    transform = make_transform(preprocessing, train=False)
    loader = DataLoader(
        Subset(TransformedDataset(dataset, transform), rows),
        batch_size=batch_size,
        num_workers=num_workers,
    )
    yield from loader


def _shard_batches(
    dataset: Any,
    preprocessing: dict[str, Any],
    batch_size: int,
    num_workers: int,
    progress: bool,
    desc: str,
) -> Any:
    """This process's share of a data set in evaluation batches, behind a progress bar shown
    by process 0 only."""
    rows = shard_rows(len(dataset))
    return tqdm(
        eval_batches(dataset, batch_size, preprocessing, num_workers, rows),
        total=-(-len(rows) // batch_size),
        desc=desc,
        disable=None if progress and is_main() else True,
        leave=False,
    )


def embed_dataset(
    model: torch.nn.Module,
    dataset: Any,
    preprocessing: dict[str, Any],
    device: torch.device,
    batch_size: int = 512,
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "embed",
    precision: str = "32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-normalization features `[N, D]` (float32, CPU) and labels `[N]` of a whole data set.

    In a multi-process run each process embeds its shard and every process gets all rows, in
    the data set's order.
    """
    bar = _shard_batches(dataset, preprocessing, batch_size, num_workers, progress, desc)
    feats = [z for z, _ in embed_batches(model, bar, device, normalize=False, precision=precision)]
    local = torch.cat(feats) if feats else torch.empty(0, int(model.embed_dim), device=device)  # type: ignore[arg-type]
    features = gather_rows(local, len(dataset)).cpu()
    return features, torch.as_tensor(dataset.labels)


def class_sums_of(
    model: torch.nn.Module,
    dataset: Any,
    preprocessing: dict[str, Any],
    device: torch.device,
    batch_size: int = 512,
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "full pass",
    precision: str = "32",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-class sums `[C, D]` of the unit embeddings of a whole (training) set and the class
    counts `[C]`: what `global` refreshes from and what nearest-class-mean accuracy uses. In a
    multi-process run each process embeds its shard and the sums are added over processes."""
    bar = _shard_batches(dataset, preprocessing, batch_size, num_workers, progress, desc)
    return compute_class_sums(model, bar, len(dataset.class_names), device, precision=precision)
