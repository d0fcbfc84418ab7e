"""EmbeddingModel: head, normalization, the `embed` helper and input checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vmfml.models import EmbeddingModel, create_model

PRE = {
    "input_size": (3, 8, 8),
    "mean": [0.5] * 3,
    "std": [0.5] * 3,
    "interpolation": "bilinear",
    "crop_pct": 1.0,
}


class MeanPool(nn.Module):
    """A parameter-free backbone: per-channel means, `[B, 3, H, W] -> [B, 3]`."""

    num_features = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def test_forward_is_linear_head_then_l2_normalization() -> None:
    torch.manual_seed(0)
    model = EmbeddingModel(MeanPool(), embed_dim=5, preprocessing=PRE)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    model = model.double()
    w, b = model.head[0].weight, model.head[0].bias
    expected = x.mean(dim=(2, 3)) @ w.T + b  # [4, 5]
    torch.testing.assert_close(model(x, normalize=False), expected)
    torch.testing.assert_close(model(x), expected / expected.norm(dim=1, keepdim=True))


def test_head_bn_drops_the_linear_bias_and_normalizes_the_batch() -> None:
    torch.manual_seed(0)
    model = EmbeddingModel(MeanPool(), embed_dim=5, preprocessing=PRE, head_bn=True)
    assert model.head[0].bias is None and isinstance(model.head[1], nn.BatchNorm1d)
    z = model(torch.randn(64, 3, 8, 8), normalize=False)  # training mode: batch statistics
    torch.testing.assert_close(z.mean(0), torch.zeros(5), atol=1e-5, rtol=0)


def test_embed_dim_none_keeps_the_backbone_features() -> None:
    model = EmbeddingModel(MeanPool(), embed_dim=None, preprocessing=PRE)
    x = torch.randn(2, 3, 8, 8)
    assert model.embed_dim == 3
    torch.testing.assert_close(model(x), F.normalize(x.mean(dim=(2, 3)), dim=1))


def test_embed_matches_forward_for_tensors_and_loaders_and_restores_mode() -> None:
    torch.manual_seed(0)
    model = create_model("small_cnn", embed_dim=16, depth=2)
    model.train()
    x = torch.randn(37, 1, 28, 28)
    with torch.no_grad():
        expected = model.eval()(x)
    model.train()
    from_tensor = model.embed(x, batch_size=10, progress=False)
    loader = DataLoader(TensorDataset(x, torch.zeros(37, dtype=torch.long)), batch_size=8)
    from_loader = model.embed(loader, progress=False)
    assert model.training
    assert from_tensor.shape == (37, 16) and not from_tensor.requires_grad
    torch.testing.assert_close(from_tensor, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(from_loader, expected, atol=1e-5, rtol=1e-5)


def test_bad_inputs_get_clear_errors() -> None:
    model = create_model("small_cnn", embed_dim=8, depth=1)
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        model(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match="float"):
        model(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="batch_size"):
        model.embed(torch.randn(2, 1, 28, 28), batch_size=0)
    with pytest.raises(ValueError, match="embed_dim"):
        EmbeddingModel(MeanPool(), embed_dim=0, preprocessing=PRE)
    with pytest.raises(ValueError, match="crop_pct"):
        EmbeddingModel(
            MeanPool(), embed_dim=2, preprocessing={k: v for k, v in PRE.items() if k != "crop_pct"}
        )
    with pytest.raises(ValueError, match="mean/std"):
        EmbeddingModel(MeanPool(), embed_dim=2, preprocessing={**PRE, "mean": [0.5]})
    with pytest.raises(ValueError, match="num_features"):
        EmbeddingModel(nn.Identity(), embed_dim=2, preprocessing=PRE)


class ConvBN(nn.Module):
    """conv -> BatchNorm -> pooled features: a backbone with BatchNorm statistics to keep."""

    num_features = 4

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)).mean(dim=(2, 3))


@pytest.mark.parametrize("frozen", [True, False])
def test_frozen_batchnorm_keeps_the_backbone_statistics_and_parameters(frozen: bool) -> None:
    """Training steps move the convolution and the head; with the backbone's BatchNorm frozen,
    its running statistics, scale and shift stay as they were (and the head's BatchNorm still
    trains); unfrozen, all of them move."""
    torch.manual_seed(0)
    model = EmbeddingModel(ConvBN(), embed_dim=5, preprocessing=PRE, head_bn=True)
    if frozen:
        model.freeze_batchnorm()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    model.train()  # a later train() call must not unfreeze it
    assert model.backbone.bn.training is not frozen and model.head[1].training
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.1)
    for _ in range(3):
        x = torch.randn(16, 3, 8, 8) * 3 + 1  # other statistics than the initial 0 and 1
        optimizer.zero_grad()
        model(x, normalize=False).pow(2).sum().backward()
        optimizer.step()
    after = model.state_dict()
    for name in ("bn.running_mean", "bn.running_var", "bn.weight", "bn.bias"):
        assert torch.equal(after[f"backbone.{name}"], before[f"backbone.{name}"]) is frozen, name
    for name in ("backbone.conv.weight", "head.0.weight", "head.1.running_mean", "head.1.weight"):
        assert not torch.equal(after[name], before[name]), name
