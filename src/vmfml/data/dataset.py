"""The `ImageDataset` contract every data source fulfils, and the in-memory `TensorImageDataset`.

An `ImageDataset` is a torch `Dataset` of `(image uint8 [C, H, W], label int)` pairs with
`labels` (LongTensor [N]), `class_names` (list[str], index = label) and `paths` (list[str] or
None for in-memory sets). Images stay uint8 here; turning them into the float tensor a model
expects is the job of `vmfml.data.transforms`, so that the same dataset serves any model.

`class_sources` optionally names where each class comes from (for instance "fashion" or
"animal" in the combined 30-class set); splits keep it aligned with `class_names`.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TypeVar

import torch
from torch import Tensor
from torch.utils.data import Dataset

D = TypeVar("D", bound="ImageDataset")


def as_index_tensor(indices: Sequence[int] | Tensor, size: int) -> Tensor:
    """Indices (a list, a LongTensor or a boolean mask of length `size`) as a LongTensor [M].

    Out-of-range indices are refused here, with the dataset size in the message, rather than
    failing later inside a DataLoader worker.
    """
    idx = torch.as_tensor(indices)
    if idx.dtype == torch.bool:
        if idx.shape != (size,):
            raise ValueError(f"a boolean mask must have shape ({size},); got {tuple(idx.shape)}")
        return idx.nonzero().flatten()
    if idx.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    if idx.is_floating_point() or idx.dim() != 1:
        raise ValueError(
            f"indices must be a 1-d sequence of integers; got {idx.dtype} of shape {tuple(idx.shape)}"
        )
    idx = idx.long()
    if int(idx.min()) < -size or int(idx.max()) >= size:
        raise ValueError(
            f"indices must lie in [0, {size}); got range [{int(idx.min())}, {int(idx.max())}]"
        )
    return idx % size if size else idx


class ImageDataset(Dataset[tuple[Tensor, int]], ABC):
    """A labelled set of images: `dataset[i] -> (uint8 [C, H, W], int label)`.

    Attributes:
        labels: LongTensor [N], values in `0 .. len(class_names) - 1`.
        class_names: one name per label.
        paths: one file per image, or None for in-memory sets.
        class_sources: one source name per class (e.g. "fashion"), or None.
    """

    labels: Tensor
    class_names: list[str]
    paths: list[str] | None
    class_sources: list[str] | None

    def __init__(
        self,
        labels: Tensor | Sequence[int],
        class_names: Sequence[str],
        paths: Sequence[str] | None = None,
        class_sources: Sequence[str] | None = None,
    ) -> None:
        self.labels = _check_labels(labels, class_names)
        self.class_names = [str(name) for name in class_names]
        if paths is not None and len(paths) != len(self.labels):
            raise ValueError(f"got {len(paths)} paths for {len(self.labels)} labels")
        self.paths = None if paths is None else [str(p) for p in paths]
        if class_sources is not None and len(class_sources) != len(self.class_names):
            raise ValueError(
                f"got {len(class_sources)} class sources for {len(self.class_names)} classes"
            )
        self.class_sources = None if class_sources is None else [str(s) for s in class_sources]

    # --- what a source implements ---------------------------------------------------------
    @abstractmethod
    def image(self, index: int) -> Tensor:
        """The image at `index` as uint8 [C, H, W]."""

    @abstractmethod
    def _take(self: D, indices: Tensor) -> D:
        """A copy of this dataset restricted to `indices` (LongTensor, already validated)."""

    # --- the common interface --------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.image(index), int(self.labels[index])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_counts(self) -> Tensor:
        """Images per class, LongTensor [num_classes] (zero for a class without images)."""
        return torch.bincount(self.labels, minlength=self.num_classes)

    def subset(self: D, indices: Sequence[int] | Tensor) -> D:
        """The images at `indices` (a list, LongTensor or boolean mask), same classes and names."""
        return self._take(as_index_tensor(indices, len(self)))

    def relabel(
        self: D,
        labels: Tensor | Sequence[int],
        class_names: Sequence[str],
        class_sources: Sequence[str] | None = None,
    ) -> D:
        """The same images under new labels and class names (a shallow copy; images are shared)."""
        if len(labels) != len(self):
            raise ValueError(
                f"relabel needs one label per image: got {len(labels)} for {len(self)} images"
            )
        out = copy.copy(self)
        out.labels = _check_labels(labels, class_names)
        out.class_names = [str(name) for name in class_names]
        if class_sources is not None and len(class_sources) != len(out.class_names):
            raise ValueError(
                f"got {len(class_sources)} class sources for {len(out.class_names)} classes"
            )
        out.class_sources = None if class_sources is None else [str(s) for s in class_sources]
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images, {self.num_classes} classes)"


class TensorImageDataset(ImageDataset):
    """An in-memory image set: `images` uint8 [N, C, H, W] (Fashion-MNIST, Animal-MNIST, ...).

    The whole `images` tensor is public so that a trainer can index a batch at once
    (`images[batch_indices]`) and skip per-item Python overhead; see `transforms.prepare_batch`.
    """

    images: Tensor

    def __init__(
        self,
        images: Tensor,
        labels: Tensor | Sequence[int],
        class_names: Sequence[str],
        paths: Sequence[str] | None = None,
        class_sources: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            got = (
                f"{images.dtype} of shape {tuple(images.shape)}"
                if isinstance(images, Tensor)
                else type(images).__name__
            )
            raise ValueError(f"images must be a uint8 tensor [N, C, H, W]; got {got}")
        if images.shape[1] not in (1, 3):
            raise ValueError(
                f"images must have 1 (grey) or 3 (RGB) channels; got {images.shape[1]}"
            )
        super().__init__(labels, class_names, paths, class_sources)
        if len(self.labels) != images.shape[0]:
            raise ValueError(f"got {images.shape[0]} images but {len(self.labels)} labels")
        self.images = images

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) shared by every image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def image(self, index: int) -> Tensor:
        return self.images[index]

    def _take(self, indices: Tensor) -> TensorImageDataset:
        return TensorImageDataset(
            self.images[indices],
            self.labels[indices],
            self.class_names,
            None if self.paths is None else [self.paths[i] for i in indices.tolist()],
            self.class_sources,
        )

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return f"TensorImageDataset({len(self)} images, {self.num_classes} classes, {c}x{h}x{w})"


def _check_labels(labels: Tensor | Sequence[int], class_names: Sequence[str]) -> Tensor:
    """Labels as a LongTensor [N] in range for `class_names`, refusing anything else clearly."""
    if isinstance(class_names, str):
        raise ValueError("class_names must be a list of names, not a single string")
    if len(set(class_names)) != len(class_names):
        dupes = sorted({n for n in class_names if list(class_names).count(n) > 1})
        raise ValueError(f"class names must be unique; repeated: {', '.join(map(str, dupes))}")
    out = torch.as_tensor(labels)
    if out.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    if out.dim() != 1 or out.is_floating_point() or out.dtype == torch.bool:
        raise ValueError(
            f"labels must be integers of shape [N]; got {out.dtype} of shape {tuple(out.shape)}"
        )
    out = out.long()
    lo, hi = int(out.min()), int(out.max())
    if lo < 0 or hi >= len(class_names):
        raise ValueError(
            f"labels must lie in [0, {len(class_names)}) for {len(class_names)} class names; got [{lo}, {hi}]"
        )
    return out
