"""The small-CNN family: 1 to 4 conv blocks, global average pooling (any input size).

The paper reports that the vMF loss helps most when the network has few convolutional layers;
`depth` is that knob. Each block is conv3x3-BN-ReLU (twice when `convs_per_block=2`) followed
by a 2x2 max-pool that halves the resolution; widths double per block (16, 32, 64, 128 times
`width`). Convolutions have no bias because the BatchNorm right after them subtracts the mean.

Default (depth 3, two convs per block, widths 16-32-64, 80k parameters) chosen by measurement,
batch 256, forward+backward, `torch.set_num_threads(2)` pinned to 2 cores of a Xeon (train img/s):

    depth  convs/block  width  params  img/s  60k epoch   Fashion-MNIST test acc, 240 s of vMF training
    1      1            2      5k      2279   26 s
    1      2            2      14k     1219   49 s
    2      1            2      27k     2022   30 s
    2      2            2      74k      751   80 s        88.1 %
    3      1            2      109k    1430   42 s        91.2 %
    3      2            2      303k     626   96 s        90.2 %
    3      2            1      80k     2255   27 s        92.2 %   <- default
    4      1            2      421k    1499   40 s
    4      2            2      1206k    529  113 s

Accuracy: vMF loss (kappa 16, class means accumulated over each epoch, D = 64), AdamW 3e-3 with a
cosine schedule, random flips, batch 256; the four trials ran at once on separate core pairs.
channels_last filters gave 1.1-2x over the default layout on the CPU.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vmfml.models.embedding import EmbeddingModel
from vmfml.models.registry import register_model

BASE_WIDTHS = (16, 32, 64, 128)


class SmallCNN(nn.Module):
    """`depth` conv blocks then global average pooling: `[B, C, H, W] -> [B, num_features]`.

    Args:
        depth: number of blocks, 1..4.
        width: channel multiplier on (16, 32, 64, 128).
        in_chans: input channels C.
        convs_per_block: 1 or 2 conv3x3-BN-ReLU layers before each max-pool.
    """

    def __init__(
        self, depth: int = 3, width: float = 1.0, in_chans: int = 1, convs_per_block: int = 2
    ) -> None:
        super().__init__()
        if depth not in (1, 2, 3, 4):
            raise ValueError(f"small_cnn depth must be 1, 2, 3 or 4, got {depth!r}")
        if convs_per_block not in (1, 2):
            raise ValueError(f"small_cnn convs_per_block must be 1 or 2, got {convs_per_block!r}")
        if not width > 0:
            raise ValueError(f"small_cnn width must be positive, got {width!r}")
        if not isinstance(in_chans, int) or in_chans <= 0:
            raise ValueError(f"in_chans must be a positive int, got {in_chans!r}")
        layers: list[nn.Module] = []
        chans = in_chans
        for base in BASE_WIDTHS[:depth]:
            out = max(8, round(base * width))
            for _ in range(convs_per_block):
                layers += [
                    nn.Conv2d(chans, out, 3, padding=1, bias=False),
                    nn.BatchNorm2d(out),
                    nn.ReLU(inplace=True),
                ]
                chans = out
            # ceil_mode keeps odd sizes from losing their last row (7 -> 4, not 3).
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = chans
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # channels_last filters make the CPU (oneDNN) and GPU convolutions pick their NHWC
        # kernels (faster, see the module docstring); `.to(device)` and `load_state_dict` keep
        # this layout.
        self.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)  # [B, F, H / 2^depth, W / 2^depth]
        return self.pool(x).flatten(1)  # [B, F]


@register_model("small_cnn")
def small_cnn(
    embed_dim: int | None = 128,
    depth: int = 3,
    width: float = 1.0,
    convs_per_block: int = 2,
    in_chans: int = 1,
    input_size: int = 28,
    head_bn: bool = False,
) -> EmbeddingModel:
    """A small CNN embedding model, fast on CPU (Fashion-MNIST-sized inputs by default).

    Args:
        embed_dim: output dimension D (None: the last block's width).
        depth: conv blocks, 1..4 (fewer blocks = the paper's "fewer convolutional layers").
        width: channel multiplier on (16, 32, 64, 128).
        convs_per_block: conv layers per block, 1 or 2.
        in_chans: image channels (1 for grey).
        input_size: the side the data transforms resize to; the network itself takes any size.
        head_bn: BatchNorm1d after the linear head.
    """
    if not isinstance(input_size, int) or input_size <= 0:
        raise ValueError(f"input_size must be a positive int, got {input_size!r}")
    backbone = SmallCNN(
        depth=depth, width=width, in_chans=in_chans, convs_per_block=convs_per_block
    )
    preprocessing = {
        "input_size": (in_chans, input_size, input_size),
        # Mid-grey centring: the first BatchNorm absorbs any dataset-specific statistics.
        "mean": [0.5] * in_chans,
        "std": [0.5] * in_chans,
        "interpolation": "bilinear",
        "crop_pct": 1.0,
    }
    return EmbeddingModel(backbone, embed_dim, preprocessing, head_bn=head_bn)
