"""Open-set classification: posteriors of the known classes and a score that says "none of these"."""

from vmfml.openset.classifier import OpenSetClassifier, Prediction, fit_posterior_kappa
from vmfml.openset.functional import (
    SCORES,
    class_log_likelihoods,
    knn_distance,
    open_set_metrics,
    posteriors,
    threshold_at_keep_rate,
    unknown_scores,
)

__all__ = [
    "SCORES",
    "OpenSetClassifier",
    "Prediction",
    "class_log_likelihoods",
    "fit_posterior_kappa",
    "knn_distance",
    "open_set_metrics",
    "posteriors",
    "threshold_at_keep_rate",
    "unknown_scores",
]
