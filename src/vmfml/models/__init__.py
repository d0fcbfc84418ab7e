"""Embedding models: a registry (`create_model`), small CNNs, timm backbones, EfficientNet-Lite0."""

from vmfml.models.embedding import EmbeddingModel
from vmfml.models.registry import create_model, list_models, model_options, register_model

# Importing the model files registers their factories.
from vmfml.models import efficientnet_lite, small_cnn, timm_backbone  # noqa: E402, F401  # isort: skip

__all__ = ["EmbeddingModel", "create_model", "list_models", "model_options", "register_model"]
