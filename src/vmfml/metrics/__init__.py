"""Pure evaluation metrics: retrieval (Recall@K, MAP@R, R-Precision, NMI), classification
(accuracy, ECE, NLL) and exact kNN backends (faiss, torch)."""

from vmfml.metrics.classification import (
    classification_metrics,
    expected_calibration_error,
    nearest_direction_accuracy,
)
from vmfml.metrics.clustering import nmi, spherical_kmeans
from vmfml.metrics.knn import ExactSearch, knn
from vmfml.metrics.retrieval import retrieval_metrics

__all__ = [
    "ExactSearch",
    "classification_metrics",
    "expected_calibration_error",
    "knn",
    "nearest_direction_accuracy",
    "nmi",
    "retrieval_metrics",
    "spherical_kmeans",
]
