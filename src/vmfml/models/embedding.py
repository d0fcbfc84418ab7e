"""`EmbeddingModel`: backbone -> linear head -> L2 normalization, images to points on S^(D-1)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm


class EmbeddingModel(nn.Module):
    """Maps images `[B, C, H, W]` to unit-norm embeddings `[B, D]` (similarity = dot product).

    Args:
        backbone: module with an int attribute `num_features` (F) whose forward maps images
            `[B, C, H, W]` to pooled features `[B, F]` (a timm model built with `num_classes=0`
            is one).
        embed_dim: output dimension D of the linear head; None keeps the F backbone features
            (no projection, D = F).
        preprocessing: how images must be prepared for this backbone: `{"input_size": (C, H, W),
            "mean": [...], "std": [...], "interpolation": "bilinear" | "bicubic", "crop_pct": float}`.
        head_bn: add a BatchNorm1d after the linear head (the Linear then has no bias).
        num_features: F when the backbone's `num_features` is not its output width (timm models
            with a pre-logits layer, such as MobileNetV3, output `head_hidden_size` features).

    Attributes:
        embed_dim: D.
        num_features: F.
        preprocessing: the dict above; it travels inside every checkpoint.
        config: set by `create_model`; `create_model(**model.config)` rebuilds the architecture.
    """

    def __init__(
        self,
        backbone: nn.Module,
        embed_dim: int | None,
        preprocessing: dict[str, Any],
        head_bn: bool = False,
        num_features: int | None = None,
    ) -> None:
        super().__init__()
        if num_features is None:
            num_features = getattr(backbone, "num_features", None)
        if not isinstance(num_features, int) or num_features <= 0:
            raise ValueError("backbone must have a positive int attribute `num_features`")
        if embed_dim is not None and (not isinstance(embed_dim, int) or embed_dim <= 0):
            raise ValueError(f"embed_dim must be a positive int or None, got {embed_dim!r}")
        _check_preprocessing(preprocessing)
        # Channels-last convolution weights for every backbone (a no-op for those without 4-d
        # weights): oneDNN on CPUs and tensor-core GPUs pick faster NHWC kernels. Measured here
        # for EfficientNet-Lite0 at 64 px on 2 CPU cores (benchmarks/bench_channels_last.py):
        # 1.5x the inference and 1.09x the training throughput, same outputs to 1e-6.
        # `.to(device)` and `load_state_dict` keep the layout.
        backbone.to(memory_format=torch.channels_last)
        self.backbone = backbone
        self.num_features = num_features
        self.embed_dim = num_features if embed_dim is None else embed_dim
        layers: list[nn.Module] = []
        if embed_dim is not None:
            # A bias right before BatchNorm would be cancelled by its mean subtraction.
            layers.append(nn.Linear(num_features, embed_dim, bias=not head_bn))
        if head_bn:
            layers.append(nn.BatchNorm1d(self.embed_dim))
        self.head = nn.Sequential(*layers)
        self.preprocessing = dict(preprocessing)
        self.config: dict[str, Any] = {}
        self.frozen_batchnorm = False

    def forward(self, images: Tensor, normalize: bool = True) -> Tensor:
        """Embed a batch.

        Args:
            images: float `[B, C, H, W]`, already normalized with `self.preprocessing`.
            normalize: False returns the head's output before L2 normalization (what a plain
                softmax classifier trains on).

        Returns:
            `[B, D]`; unit rows when `normalize`.
        """
        channels = self.preprocessing["input_size"][0]
        if images.ndim != 4 or images.shape[1] != channels:
            raise ValueError(
                f"expected images [B, {channels}, H, W], got shape {tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise ValueError(
                f"expected float images normalized with model.preprocessing, got {images.dtype} "
                "(apply the transforms from vmfml.data first)"
            )
        features = self.backbone(images)  # [B, F]
        z = self.head(features)  # [B, D]
        return F.normalize(z, dim=1) if normalize else z

    def freeze_batchnorm(self) -> None:
        """Keep the backbone's BatchNorm layers as pretrained while the rest trains: running
        statistics fixed (eval mode, also in `train()`) and scale and shift not trained.

        The DML fine-tuning recipe (Proxy-Anchor's official code, `--bn-freeze 1`; the MS loss
        code's `set_bn_eval`). Here, re-estimating EfficientNet-Lite0's statistics on one epoch of
        the combined-30 training images, without a gradient step, lowers its validation Recall@1
        from 97.2 to 81.8 (BENCHMARKS.md 5.8). The head's own BatchNorm, if any, still trains.
        """
        self.frozen_batchnorm = True
        for layer in self._backbone_batchnorms():
            layer.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> EmbeddingModel:
        super().train(mode)
        if self.frozen_batchnorm:
            for layer in self._backbone_batchnorms():
                layer.eval()
        return self

    def _backbone_batchnorms(self) -> list[nn.Module]:
        return [
            m for m in self.backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
        ]

    @torch.inference_mode()
    def embed(
        self,
        data: Tensor | Iterable[Any],
        batch_size: int = 256,
        device: str | torch.device | None = None,
        progress: bool = True,
    ) -> Tensor:
        """Embed a whole set in inference mode (eval mode, restored afterwards).

        Args:
            data: a float tensor `[N, C, H, W]`, or an iterable (a DataLoader) of batches that are
                either image tensors or tuples/lists whose first item is the image tensor.
            batch_size: batch size when `data` is a tensor.
            device: where to run; default the model's device. The model is not moved.
            progress: show a tqdm bar.

        Returns:
            float32 `[N, D]` unit rows, on the CPU.
        """
        if device is None:
            device = next(self.parameters()).device
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        batches: Iterable[Any] = data.split(batch_size) if isinstance(data, Tensor) else data
        total = None
        if isinstance(data, Tensor):
            total = (len(data) + batch_size - 1) // batch_size
        elif hasattr(data, "__len__"):
            total = len(data)  # type: ignore[arg-type]
        was_training = self.training
        self.eval()
        try:
            out = []
            for batch in tqdm(batches, total=total, desc="embed", disable=not progress):
                images = batch[0] if isinstance(batch, (tuple, list)) else batch
                if not isinstance(images, Tensor):
                    raise ValueError(f"expected image tensors in the batches, got {type(images)}")
                out.append(self(images.to(device, non_blocking=True)).float().cpu())
        finally:
            self.train(was_training)
        if not out:
            return torch.empty(0, self.embed_dim)
        return torch.cat(out)


def _check_preprocessing(pre: dict[str, Any]) -> None:
    """Refuse a preprocessing dict that the data transforms could not use."""
    required = ("input_size", "mean", "std", "interpolation", "crop_pct")
    missing = [k for k in required if k not in pre]
    if missing:
        raise ValueError(f"preprocessing lacks {missing}; it needs {list(required)}")
    size = tuple(pre["input_size"])
    if len(size) != 3:
        raise ValueError(f"preprocessing input_size must be (C, H, W), got {pre['input_size']}")
    if len(pre["mean"]) != size[0] or len(pre["std"]) != size[0]:
        raise ValueError(f"preprocessing mean/std need {size[0]} values (one per channel)")
    if pre["interpolation"] not in ("bilinear", "bicubic", "nearest"):
        raise ValueError(
            f"preprocessing interpolation {pre['interpolation']!r} is not one of bilinear, bicubic, nearest"
        )
