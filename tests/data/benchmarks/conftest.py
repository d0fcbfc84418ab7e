"""Tiny but real image files for the benchmark-tree tests: JPEGs written with PIL, one solid
colour per image index, so a test can tell from the decoded pixels which file it got."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


class Jpegs:
    """Writes and recognises the test images (non-square, so a transposed decode shows)."""

    size = (12, 8)  # (width, height)

    @staticmethod
    def color(index: int) -> tuple[int, int, int]:
        # Channels far apart between consecutive indices: JPEG rounding cannot confuse two images.
        return ((40 * index) % 256, (90 + 70 * index) % 256, (200 - 30 * index) % 256)

    def write(self, path: Path, index: int, mode: str = "RGB") -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", self.size, self.color(index)).convert(mode).save(
            path, format="JPEG", quality=95
        )
        return path

    def grey(self, index: int) -> tuple[int, int, int]:
        """The RGB decode of image `index` written in mode "L" (ITU-R 601 luma, as PIL computes it)."""
        r, g, b = self.color(index)
        y = round(0.299 * r + 0.587 * g + 0.114 * b)
        return (y, y, y)

    def check(self, image: torch.Tensor, index: int, grey: bool = False) -> None:
        """`image` is the uint8 [3, H, W] decode of the image written with `index`."""
        assert image.dtype == torch.uint8
        assert tuple(image.shape) == (3, self.size[1], self.size[0])
        expected = self.grey(index) if grey else self.color(index)
        mean = image.float().mean(dim=(1, 2)).numpy()
        np.testing.assert_allclose(mean, np.array(expected, dtype=float), atol=3.0)


@pytest.fixture
def jpegs() -> Jpegs:
    return Jpegs()
