"""From uint8 images to the float tensor a model expects, as its `preprocessing` dict describes.

`preprocessing` travels with every model and checkpoint:
`{"input_size": (C, H, W), "mean": [C floats], "std": [C floats], "interpolation": "bilinear"}`.

The steps, in order (the same for one image and for a batch, through the same code):
1. uint8 -> float in [0, 1];
2. channels: grey -> RGB by repeating the channel, RGB -> grey with the ITU-R 601-2 luma
   weights (0.299, 0.587, 0.114; what PIL's convert("L") uses);
3. resize to (H, W) (antialiased when shrinking), skipped when the size already matches;
4. augmentation (training only): "flip" mirrors half of the images left-right; "flip_crop"
   also pads by 1/8 of the side with black and crops back at a random offset (the CIFAR recipe);
5. normalize: (x - mean) / std per channel.
(Steps 3-4 act on each channel alone; grey -> RGB is done after them, which is equivalent and
three times cheaper.)

`prepare_batch` does it on a whole batch at once (the fast path for in-memory sets, on any
device); with a `torch.Generator` its random draws, and so a resumed training run, are
reproducible bit for bit. `make_transform` wraps the same steps for one image, for a DataLoader
over an image folder, where `TransformedDataset` can seed each image's draws on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from vmfml.data.dataset import ImageDataset

AUGMENTATIONS = ("none", "flip", "flip_crop")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area")
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
CROP_PAD_FRACTION = 1 / 8  # 4 pixels at 32x32, as in the CIFAR recipe


@dataclass(frozen=True)
class Preprocessing:
    """A checked `preprocessing` dict: channels, (H, W), mean and std per channel, interpolation."""

    channels: int
    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"

    @classmethod
    def from_dict(cls, preprocessing: Mapping[str, Any] | Preprocessing) -> Preprocessing:
        """Validate a model's `preprocessing` dict, naming the faulty key."""
        if isinstance(preprocessing, Preprocessing):
            return preprocessing
        if not isinstance(preprocessing, Mapping):
            raise ValueError(f"preprocessing must be a dict; got {type(preprocessing).__name__}")
        missing = [k for k in ("input_size", "mean", "std") if k not in preprocessing]
        if missing:
            raise ValueError(
                f"preprocessing lacks {', '.join(missing)}; it needs input_size (C, H, W), mean, std"
            )
        size = tuple(preprocessing["input_size"])
        if (
            len(size) != 3
            or not all(isinstance(v, int) and v > 0 for v in size)
            or size[0] not in (1, 3)
        ):
            raise ValueError(
                f"preprocessing input_size must be (C, H, W) with C = 1 or 3; got {preprocessing['input_size']!r}"
            )
        channels = int(size[0])
        mean = tuple(float(v) for v in preprocessing["mean"])
        std = tuple(float(v) for v in preprocessing["std"])
        if len(mean) != channels or len(std) != channels:
            raise ValueError(
                f"preprocessing mean and std need {channels} values (one per channel); got {mean} and {std}"
            )
        if min(std) <= 0:
            raise ValueError(f"preprocessing std must be positive; got {std}")
        interpolation = str(preprocessing.get("interpolation", "bilinear"))
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {', '.join(INTERPOLATIONS)}; got {interpolation!r}"
            )
        return cls(channels, (int(size[1]), int(size[2])), mean, std, interpolation)


def prepare_batch(
    images: Tensor,
    preprocessing: Mapping[str, Any] | Preprocessing,
    augment: str = "none",
    generator: torch.Generator | None = None,
) -> Tensor:
    """uint8 images [B, C, H, W] -> normalized float32 [B, C', H', W'] on the same device.

    Args:
        images: uint8 [B, C, H, W] with C = 1 or 3, any device.
        preprocessing: the model's dict (input_size = (C', H', W'), mean, std, interpolation).
        augment: "none", "flip" or "flip_crop" (see the module docstring); pass "none" for
            evaluation.
        generator: the source of the random flips and crop offsets (a CPU generator is fine for
            images on a GPU); None uses torch's global generator.
    """
    spec = Preprocessing.from_dict(preprocessing)
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}; got {augment!r}")
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        got = (
            f"{images.dtype} of shape {tuple(images.shape)}"
            if isinstance(images, Tensor)
            else type(images).__name__
        )
        raise ValueError(f"images must be a uint8 tensor [B, C, H, W]; got {got}")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 (grey) or 3 (RGB) channels; got {images.shape[1]}")

    x = images.float().div_(255.0)
    # Resizing and cropping act on each channel alone, so they commute with the channel change:
    # reduce RGB -> grey before them and expand grey -> RGB after them, to work on 1 channel.
    if spec.channels == 1:
        x = _convert_channels(x, 1)
    x = _resize(x, spec.size, spec.interpolation)
    if augment != "none":
        x = _augment(x, augment, generator)
    x = _convert_channels(x, spec.channels)
    mean = torch.tensor(spec.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def _convert_channels(x: Tensor, channels: int) -> Tensor:
    """[B, C, H, W] floats -> [B, channels, H, W]."""
    if x.shape[1] == channels:
        return x
    if channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    weights = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _resize(x: Tensor, size: tuple[int, int], interpolation: str) -> Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    if interpolation in ("bilinear", "bicubic"):
        x = F.interpolate(x, size=size, mode=interpolation, align_corners=False, antialias=True)
        # Bicubic overshoots at edges; keep values a valid [0, 1] image before normalizing.
        return x.clamp_(0.0, 1.0)
    return F.interpolate(x, size=size, mode=interpolation)


def _augment(x: Tensor, augment: str, generator: torch.Generator | None) -> Tensor:
    """Random left-right flips, then (for "flip_crop") a zero-padded random crop, per image.

    The random numbers are drawn in a fixed order (flips, then row offsets, then column
    offsets) on the generator's device, so the same generator state gives the same batch.
    """
    b, _, h, w = x.shape
    draw_device = generator.device if generator is not None else torch.device("cpu")
    flip = torch.rand(b, generator=generator, device=draw_device) < 0.5
    x = torch.where(flip.to(x.device).view(b, 1, 1, 1), x.flip(-1), x)
    if augment == "flip":
        return x
    pad = max(1, round(min(h, w) * CROP_PAD_FRACTION))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=draw_device).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=draw_device).to(x.device)
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (dy.view(b, 1) + torch.arange(h, device=x.device)).view(b, 1, h, 1)
    cols = (dx.view(b, 1) + torch.arange(w, device=x.device)).view(b, 1, 1, w)
    batch = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    channel = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return padded[batch, channel, rows, cols]


class ImageTransform:
    """One uint8 image [C, H, W] -> the model's float tensor [C', H', W'] (`prepare_batch` on a
    batch of one, so single images and batches agree exactly). A class rather than a closure so
    that DataLoader worker processes can pickle it."""

    def __init__(self, preprocessing: Mapping[str, Any], augment: str = "none") -> None:
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}; got {augment!r}")
        self.spec = Preprocessing.from_dict(preprocessing)
        self.augment = augment

    def __call__(self, image: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The image prepared; its augmentation draws from `generator` (None: torch's global
        generator)."""
        if not isinstance(image, Tensor) or image.dim() != 3:
            raise ValueError(
                f"expected one uint8 image [C, H, W]; got {getattr(image, 'shape', type(image))}"
            )
        return prepare_batch(image.unsqueeze(0), self.spec, self.augment, generator)[0]

    def __repr__(self) -> str:
        return f"ImageTransform({self.spec}, augment={self.augment!r})"


def make_transform(
    preprocessing: Mapping[str, Any], train: bool, augment: str = "none"
) -> ImageTransform:
    """The per-image transform for a model: augmentation only when `train` is True."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTATIONS)}; got {augment!r}")
    return ImageTransform(preprocessing, augment if train else "none")


class TransformedDataset(Dataset[tuple[Tensor, int]]):
    """`(transform(image), label)` pairs of an `ImageDataset`, for a DataLoader.

    With `seeds` ([len(dataset)] integers), image i's augmentation draws from a generator seeded
    with `seeds[i]`: the same whichever process or DataLoader worker prepares it.
    """

    def __init__(
        self, dataset: ImageDataset, transform: ImageTransform, seeds: Tensor | None = None
    ) -> None:
        if seeds is not None and seeds.shape != (len(dataset),):
            raise ValueError(
                f"seeds must have shape [{len(dataset)}] (one per image), got {list(seeds.shape)}"
            )
        self.dataset = dataset
        self.transform = transform
        self.seeds = seeds

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image, label = self.dataset[index]
        if self.seeds is None:
            return self.transform(image), label
        generator = torch.Generator().manual_seed(int(self.seeds[index]))
        return self.transform(image, generator), label
