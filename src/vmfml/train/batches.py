"""Batches for training and evaluation, reproducible from (seed, epoch) alone.

Every random choice of an epoch (order, augmentation, worker seeds) comes from a generator seeded
with the run's seed and the epoch number, so a run resumed at an epoch boundary replays exactly
what an uninterrupted run would have done.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from vmfml.data.transforms import TransformedDataset, make_transform, prepare_batch


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
    """Shuffled batches of `[B, C, H, W]` float images and `[B]` labels; the last partial batch is dropped."""
    n = len(dataset)
    batch_size = min(batch_size, n)
    if in_memory(dataset):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            images = prepare_batch(
                dataset.images[idx.to(dataset.images.device)], preprocessing, augment, generator
            )
            yield images, dataset.labels[idx]
        return
    transform = make_transform(preprocessing, train=True, augment=augment)
    loader = DataLoader(
        TransformedDataset(dataset, transform),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
        generator=generator,
        persistent_workers=False,
    )
    if num_workers == 0:
        # Augmentations in this process draw from torch's global generator: seed it per epoch too.
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
    for images, labels in loader:
        yield images, labels


def eval_batches(
    dataset: Any,
    batch_size: int,
    preprocessing: dict[str, Any],
    num_workers: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """All images in order, without augmentation."""
    if in_memory(dataset):
        for start in range(0, len(dataset), batch_size):
            images = prepare_batch(
                dataset.images[start : start + batch_size], preprocessing, "none", None
            )
            yield images, dataset.labels[start : start + batch_size]
        return
    transform = make_transform(preprocessing, train=False)
    loader = DataLoader(
        TransformedDataset(dataset, transform), batch_size=batch_size, num_workers=num_workers
    )
    yield from loader


@torch.inference_mode()
def embed_dataset(
    model: torch.nn.Module,
    dataset: Any,
    preprocessing: dict[str, Any],
    device: torch.device,
    batch_size: int = 512,
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "embed",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pre-normalization features `[N, D]` (float32, CPU) and labels `[N]` of a whole data set."""
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    feats, labels = [], []
    batches = eval_batches(dataset, batch_size, preprocessing, num_workers)
    total = -(-len(dataset) // batch_size)
    for images, y in tqdm(
        batches, total=total, desc=desc, disable=None if progress else True, leave=False
    ):
        feats.append(model(images.to(device), normalize=False).float().cpu())
        labels.append(y)
    model.train(was_training)
    return torch.cat(feats), torch.cat(labels)
