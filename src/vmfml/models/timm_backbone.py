"""Any timm model as the backbone: `create_model("timm:<timm name>", ...)`.

timm builds the network with `num_classes=0`, so its forward returns pooled features
`[B, num_features]`; its preprocessing (input size, mean, std, interpolation, crop) comes from
`timm.data.resolve_data_config` and is stored with the model, so it travels inside checkpoints.
Pretrained weights come either from timm's hub download (`pretrained=True`, needs internet) or
from a local file (`weights=PATH`).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from vmfml.models.embedding import EmbeddingModel
from vmfml.models.registry import register_model
from vmfml.safe_load import load_tensors

# Where a checkpoint file may keep its state dict, most specific first.
_STATE_DICT_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model_state_dict", "model", "net")


def create_timm_backbone(
    model_name: str,
    pretrained: bool = False,
    in_chans: int = 3,
    model_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """`timm.create_model(model_name, num_classes=0, ...)` with clear errors.

    Returns:
        a module mapping `[B, in_chans, H, W]` to pooled features `[B, num_features]`.

    Raises:
        ValueError: unknown timm model name (with a close match).
        RuntimeError: `pretrained=True` without internet (pass weights=PATH instead).
    """
    import timm

    if not timm.is_model(model_name):
        close = difflib.get_close_matches(model_name, timm.list_models(), n=3)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise ValueError(
            f"unknown timm model {model_name!r}.{hint} timm.list_models() lists the valid names."
        )
    kwargs = dict(model_kwargs or {})
    try:
        return timm.create_model(
            model_name, pretrained=pretrained, num_classes=0, in_chans=in_chans, **kwargs
        )
    except OSError as err:  # huggingface_hub and urllib raise OSError subclasses when offline
        if not pretrained:
            raise
        raise RuntimeError(
            f"could not download the pretrained weights of {model_name!r} ({err}). "
            "no internet: pass --weights PATH (weights=PATH) with a local weight file"
        ) from err


def timm_output_width(model: nn.Module) -> int:
    """Width of the pooled output of a `num_classes=0` timm model.

    `num_features` is the width before pooling; models with a pre-logits layer after the pooling
    (MobileNetV3, some ViTs) output `head_hidden_size` features instead.
    """
    width = getattr(model, "head_hidden_size", None) or model.num_features
    return int(width)  # type: ignore[arg-type]


def timm_preprocessing(model: nn.Module, input_size: int | None, in_chans: int) -> dict[str, Any]:
    """The model's preprocessing dict, from timm's pretrained config (mean/std per channel)."""
    from timm.data import resolve_data_config

    args: dict[str, Any] = {}
    if input_size is not None:
        args["input_size"] = (in_chans, input_size, input_size)
    cfg = resolve_data_config(args, model=model)
    mean, std = [float(v) for v in cfg["mean"]], [float(v) for v in cfg["std"]]
    if len(mean) != in_chans:
        # timm adapts a 3-channel stem to other channel counts by summing/repeating its filters;
        # the statistics follow the same way: the channel average for every input channel.
        mean = [sum(mean) / len(mean)] * in_chans
        std = [sum(std) / len(std)] * in_chans
    interpolation = cfg.get("interpolation", "bilinear")
    if interpolation not in ("bilinear", "bicubic", "nearest"):
        interpolation = "bilinear"
    return {
        "input_size": (in_chans, *(int(s) for s in cfg["input_size"][1:])),
        "mean": mean,
        "std": std,
        "interpolation": interpolation,
        "crop_pct": float(cfg.get("crop_pct", 1.0)),
    }


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from a `.pth`/`.pt`/`.bin` (plain or a checkpoint dict holding one) or a
    `.safetensors` file; a DataParallel `module.` prefix is removed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: Any = load_file(str(path))
    else:
        obj = load_tensors(path, "weights file")
    if isinstance(obj, dict):
        for key in _STATE_DICT_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path} holds no state dict (a mapping from parameter names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_backbone_weights(model: nn.Module, state_dict: dict[str, Tensor], source: str) -> None:
    """Load `state_dict` into a timm backbone built with `num_classes=0`, strictly.

    Classifier weights (timm's `pretrained_cfg["classifier"]`) are dropped since the backbone has
    no classifier; a first conv saved for another channel count is adapted the way timm does.

    Raises:
        ValueError: missing, unexpected or wrongly shaped keys, listed.
    """
    from timm.models import adapt_input_conv

    cfg = getattr(model, "pretrained_cfg", None) or {}
    classifiers = cfg.get("classifier") or ()
    classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
    target = model.state_dict()
    state = {
        k: v
        for k, v in state_dict.items()
        if k in target or not any(k.startswith(c + ".") for c in classifiers)
    }
    first_conv = cfg.get("first_conv")
    key = f"{first_conv}.weight" if isinstance(first_conv, str) else None
    if key in state and key in target and state[key].shape[1] != target[key].shape[1]:
        state[key] = adapt_input_conv(target[key].shape[1], state[key])
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(target[k].shape)}"
        for k in target
        if k in state and state[k].shape != target[k].shape
    ]
    if missing or unexpected or wrong:
        raise ValueError(
            f"weights in {source} do not match the model: "
            + "; ".join(
                f"{what} ({len(keys)}): {', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}"
                for what, keys in (
                    ("missing", missing),
                    ("unexpected", unexpected),
                    ("shape", wrong),
                )
                if keys
            )
        )
    model.load_state_dict(state, strict=True)


@register_model("timm", family=True)
def timm_model(
    model_name: str,
    embed_dim: int | None = 128,
    pretrained: bool = False,
    weights: str | None = None,
    input_size: int | None = None,
    in_chans: int = 3,
    head_bn: bool = False,
    model_kwargs: dict[str, Any] | None = None,
) -> EmbeddingModel:
    """Embedding model on the timm backbone `model_name` (`create_model("timm:resnet18")`).

    Args:
        model_name: any `timm.list_models()` name.
        embed_dim: output dimension D (None: the backbone's num_features).
        pretrained: timm's own pretrained weights (downloaded: needs internet).
        weights: a local weight file for the backbone (timm parameter names); overrides
            `pretrained`.
        input_size: image side for the preprocessing (default: the model's pretrained size).
            Models with a fixed input size (ViTs) also need `model_kwargs={"img_size": N}`.
        in_chans: image channels.
        head_bn: BatchNorm1d after the linear head.
        model_kwargs: extra keyword arguments for `timm.create_model` (drop_path_rate, ...).
    """
    backbone = create_timm_backbone(
        model_name,
        pretrained=pretrained and weights is None,
        in_chans=in_chans,
        model_kwargs=model_kwargs,
    )
    if weights is not None:
        load_backbone_weights(backbone, read_state_dict(weights), str(weights))
    preprocessing = timm_preprocessing(backbone, input_size, in_chans)
    return EmbeddingModel(
        backbone,
        embed_dim,
        preprocessing,
        head_bn=head_bn,
        num_features=timm_output_width(backbone),
    )
