"""Batch norm in float64 over the global batch (`vmfml.distributed.global_batchnorm`, what
`sync_batchnorm` uses between CPU processes) computes, in one process, what the layers it replaces
compute: for plain BatchNorm and for timm's
BatchNormAct2d (EfficientNet-Lite0), whose activation must survive the swap."""

from __future__ import annotations

import copy

import pytest
import torch

from vmfml.distributed import GlobalBatchNorm, global_batchnorm, sync_batchnorm
from vmfml.models import create_model


@pytest.mark.parametrize(
    "options",
    [
        {"name": "small_cnn", "in_chans": 1, "input_size": 28},
        {"name": "efficientnet_lite0", "input_size": 64},
    ],
)
def test_global_batchnorm_computes_what_the_layers_it_replaces_do(options: dict) -> None:
    torch.manual_seed(0)
    plain = create_model(embed_dim=16, **options).train()
    # In one process sync_batchnorm leaves the model alone.
    assert sync_batchnorm(plain, torch.device("cpu")) is plain
    assert not any(isinstance(m, GlobalBatchNorm) for m in plain.modules())
    converted = global_batchnorm(copy.deepcopy(plain))
    norms = [m for m in converted.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, GlobalBatchNorm) for m in norms)
    channels = options.get("in_chans", 3)
    x = torch.randn(8, channels, options["input_size"], options["input_size"])
    torch.testing.assert_close(converted(x), plain(x), rtol=1e-4, atol=1e-5)
    # The running statistics move the same way, and eval mode is the plain layer's.
    for a, b in zip(plain.buffers(), converted.buffers(), strict=True):
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-4, atol=1e-5)
    plain.eval()
    converted.eval()
    torch.testing.assert_close(converted(x), plain(x))
