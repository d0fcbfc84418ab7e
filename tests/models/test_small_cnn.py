"""The small-CNN family: depth 1..4 at several input sizes, layout, and that it learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vmfml.models import create_model
from vmfml.models.small_cnn import BASE_WIDTHS, SmallCNN


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("side", [28, 64])
def test_every_depth_works_at_28_and_64(depth: int, side: int) -> None:
    model = create_model("small_cnn", embed_dim=32, depth=depth, input_size=side).eval()
    assert model.num_features == BASE_WIDTHS[depth - 1]
    convs = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2 * depth  # convs_per_block=2 by default
    assert all(c.bias is None for c in convs)  # BatchNorm follows every conv
    with torch.no_grad():
        z = model(torch.randn(2, 1, side, side))
    assert z.shape == (2, 32)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(2))


def test_resolution_is_halved_per_block_with_ceil() -> None:
    net = SmallCNN(depth=3, convs_per_block=1).eval()
    with torch.no_grad():
        maps = net.features(torch.randn(1, 1, 28, 28))
    assert maps.shape == (1, 64, 4, 4)  # 28 -> 14 -> 7 -> 4


def test_width_and_channels_options() -> None:
    model = create_model("small_cnn", embed_dim=8, depth=2, width=3, convs_per_block=1, in_chans=3)
    assert model.num_features == 96
    assert model.preprocessing["input_size"] == (3, 28, 28)
    assert len(model.preprocessing["mean"]) == 3
    assert model(torch.randn(2, 3, 28, 28)).shape == (2, 8)


def test_channels_last_layout_gives_the_same_function() -> None:
    torch.manual_seed(0)
    net = SmallCNN(depth=3).eval()
    assert net.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        fast = net(x)
        plain = net.to(memory_format=torch.contiguous_format)(x)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "bad", [{"depth": 0}, {"depth": 5}, {"convs_per_block": 3}, {"width": 0}, {"input_size": 0}]
)
def test_bad_options_are_rejected(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        create_model("small_cnn", **bad)


@pytest.mark.slow  # about 10 s on an idle 2-core machine
def test_learns_real_fashion_mnist_images(fashion_sample: tuple[np.ndarray, np.ndarray]) -> None:
    """160 steps of a kappa-scaled cosine softmax fit 512 real images far above chance (10%)."""
    torch.manual_seed(0)
    images, labels = fashion_sample
    x = (torch.from_numpy(images[:512].copy()).float()[:, None] / 255 - 0.5) / 0.5
    y = torch.from_numpy(labels[:512].astype(np.int64))
    model = create_model("small_cnn", embed_dim=32, depth=2, convs_per_block=1)
    mu = F.normalize(torch.randn(10, 32), dim=1)  # fixed class directions
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        for i in range(0, 512, 128):
            loss = F.cross_entropy(16 * model(x[i : i + 128]) @ mu.T, y[i : i + 128])
            opt.zero_grad()
            loss.backward()
            opt.step()
    accuracy = (model.embed(x, progress=False) @ mu.T).argmax(1).eq(y).float().mean().item()
    assert accuracy > 0.8, accuracy
