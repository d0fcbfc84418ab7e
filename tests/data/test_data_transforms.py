"""Transforms against manual float64 computations, PIL and torchvision, on real images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from vmfml.data import TensorImageDataset, make_transform, prepare_batch

GREY = {"input_size": (1, 28, 28), "mean": [0.2860], "std": [0.3530], "interpolation": "bilinear"}
RGB32 = {"input_size": (3, 32, 32), "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@pytest.fixture()
def batch(small_set: TensorImageDataset) -> torch.Tensor:
    """64 real Fashion-MNIST images, uint8 [64, 1, 28, 28]."""
    return small_set.images[:64]


def test_scale_and_normalize_match_float64(batch: torch.Tensor) -> None:
    out = prepare_batch(batch, GREY)
    expected = (batch.numpy().astype(np.float64) / 255.0 - 0.2860) / 0.3530
    assert out.dtype == torch.float32 and out.shape == (64, 1, 28, 28)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)
    assert out.min().item() == pytest.approx(-0.2860 / 0.3530, abs=1e-5)  # black background
    assert out.max().item() <= (1 - 0.2860) / 0.3530 + 1e-5


def test_grey_to_rgb_resized_matches_torchvision(batch: torch.Tensor) -> None:
    out = prepare_batch(batch, RGB32)
    assert out.shape == (64, 3, 32, 32)
    ref = TF.resize(
        batch.double() / 255, [32, 32], interpolation=TF.InterpolationMode.BILINEAR, antialias=True
    )
    ref = ref.expand(-1, 3, -1, -1)
    mean = torch.tensor(RGB32["mean"], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(RGB32["std"], dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(out.double(), (ref - mean) / std, atol=1e-5, rtol=0)


def test_downscale_is_antialiased_like_pil() -> None:
    # A 1-pixel checkerboard shrunk 4x: antialiasing gives flat grey (PIL), plain bilinear aliases.
    board = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
    out = prepare_batch(
        torch.from_numpy(board)[None, None],
        {"input_size": (1, 16, 16), "mean": [0.0], "std": [1.0]},
    )
    pil = (
        np.asarray(
            Image.fromarray(board).resize((16, 16), Image.Resampling.BILINEAR), dtype=np.float64
        )
        / 255
    )
    assert np.abs(out[0, 0].numpy() - pil).max() < 2 / 255
    assert out[0, 0].std().item() < 0.01


def test_rgb_to_grey_uses_pil_luma(small_set: TensorImageDataset) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
    out = prepare_batch(
        torch.from_numpy(rgb).permute(2, 0, 1)[None],
        {"input_size": (1, 20, 24), "mean": [0.0], "std": [1.0]},
    )
    pil_grey = (
        np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float64) / 255
    )  # rounded to uint8
    assert np.abs(out[0, 0].numpy() - pil_grey).max() <= 0.5 / 255 + 1e-6


def test_nearest_upscale_repeats_pixels(batch: torch.Tensor) -> None:
    out = prepare_batch(
        batch[:4],
        {"input_size": (1, 56, 56), "mean": [0.0], "std": [1.0], "interpolation": "nearest"},
    )
    expected = batch[:4].float().div(255).repeat_interleave(2, -1).repeat_interleave(2, -2)
    assert torch.equal(out, expected)


def test_flip_gives_each_image_or_its_mirror(batch: torch.Tensor) -> None:
    plain = prepare_batch(batch, GREY)
    out = prepare_batch(batch, GREY, augment="flip", generator=torch.Generator().manual_seed(0))
    flipped = [not torch.equal(o, p) for o, p in zip(out, plain, strict=True)]
    for o, p, f in zip(out, plain, flipped, strict=True):
        assert torch.equal(o, p.flip(-1) if f else p)
    assert 10 < sum(flipped) < 54  # about half


def test_flip_crop_is_a_window_of_the_padded_image(batch: torch.Tensor) -> None:
    """Brute force: every output is one of the 2 x 9 x 9 flips and shifts of the padded input."""
    spec = {"input_size": (1, 28, 28), "mean": [0.0], "std": [1.0]}
    plain = prepare_batch(batch[:16], spec)
    out = prepare_batch(
        batch[:16], spec, augment="flip_crop", generator=torch.Generator().manual_seed(1)
    )
    pad = 4  # round(28 / 8) = 4 (round half to even: 3.5 -> 4)
    offsets = set()
    for o, p in zip(out, plain, strict=True):
        matches = [
            (flip, dy, dx)
            for flip in (False, True)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if torch.equal(
                o,
                torch.nn.functional.pad(p.flip(-1) if flip else p, (pad,) * 4)[
                    :, dy : dy + 28, dx : dx + 28
                ],
            )
        ]
        assert matches, "output is not a flipped/shifted window of the input"
        offsets.add(matches[0][1:])
    assert len(offsets) > 4  # offsets vary across the batch


def test_augmentation_is_reproducible_from_the_generator_state(batch: torch.Tensor) -> None:
    g = torch.Generator().manual_seed(123)
    first = prepare_batch(batch, RGB32, "flip_crop", g)
    saved = g.get_state()  # what a checkpoint stores
    second = prepare_batch(batch, RGB32, "flip_crop", g)
    g2 = torch.Generator()
    g2.set_state(saved)  # a resumed run
    assert torch.equal(prepare_batch(batch, RGB32, "flip_crop", g2), second)
    assert not torch.equal(first, second)
    assert torch.equal(
        prepare_batch(batch, RGB32, "flip_crop", torch.Generator().manual_seed(123)), first
    )


def test_single_image_transform_equals_the_batch_path(batch: torch.Tensor) -> None:
    transform = make_transform(
        RGB32, train=False, augment="flip_crop"
    )  # train=False: no augmentation
    batched = prepare_batch(batch[:8], RGB32)
    for i in range(8):
        assert torch.equal(transform(batch[i]), batched[i])
    torch.manual_seed(0)
    augmented = make_transform(RGB32, train=True, augment="flip_crop")
    outs = [augmented(batch[0]) for _ in range(12)]
    assert any(not torch.equal(o, outs[0]) for o in outs)


@pytest.mark.parametrize(
    ("preprocessing", "message"),
    [
        ({"mean": [0.5], "std": [0.5]}, "lacks input_size"),
        ({"input_size": (2, 8, 8), "mean": [0.5] * 2, "std": [0.5] * 2}, "C = 1 or 3"),
        ({"input_size": (3, 8, 8), "mean": [0.5], "std": [0.5]}, "need 3 values"),
        ({"input_size": (1, 8, 8), "mean": [0.5], "std": [0.0]}, "std must be positive"),
        (
            {"input_size": (1, 8, 8), "mean": [0.5], "std": [0.5], "interpolation": "lanczos"},
            "bilinear, bicubic",
        ),
    ],
)
def test_bad_preprocessing_is_named(batch: torch.Tensor, preprocessing: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        prepare_batch(batch, preprocessing)


def test_bad_inputs_are_refused(batch: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="none, flip, flip_crop"):
        prepare_batch(batch, GREY, augment="mixup")
    with pytest.raises(ValueError, match="uint8"):
        prepare_batch(batch.float(), GREY)
    with pytest.raises(ValueError, match="1 .grey. or 3"):
        prepare_batch(torch.zeros(2, 4, 8, 8, dtype=torch.uint8), GREY)
    with pytest.raises(ValueError, match="none, flip, flip_crop"):
        make_transform(GREY, train=True, augment="rotate")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_batch_matches_cpu_with_a_cpu_generator(batch: torch.Tensor) -> None:
    cpu = prepare_batch(batch, RGB32, "flip_crop", torch.Generator().manual_seed(5))
    gpu = prepare_batch(batch.cuda(), RGB32, "flip_crop", torch.Generator().manual_seed(5))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=0)  # same draws, same crops
