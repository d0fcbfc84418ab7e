"""The vMF loss's margin and sub-centres in a real training run: one full pass per refresh
serves both the global directions and the k-means of the sub-centres, and the run trains."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from train_helpers import QUICK

from vmfml.directions import subcentres
from vmfml.train import loop
from vmfml.train.checkpoint import load_checkpoint
from vmfml.train.config import load_config

pytestmark = pytest.mark.slow


def test_a_run_with_margin_and_subcentres_clusters_each_full_pass(
    tmp_path: Path, fashion_sample: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes: list[tuple[torch.Tensor, torch.Tensor]] = []
    original = subcentres.estimate_subcentres

    def spy(x: torch.Tensor, labels: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        passes.append((x.clone(), labels.clone()))
        return original(x, labels, *args, **kwargs)

    monkeypatch.setattr("vmfml.losses.vmf.estimate_subcentres", spy)
    settings = {**QUICK, "train_subset": 1500, "epochs": 1, "directions": "global"}
    options = {"vmf_margin": 0.5, "vmf_subcentres": 3}
    result = loop.train(load_config(None, {**settings, **options, "out_dir": str(tmp_path)}))

    assert all(math.isfinite(v) for v in result.metrics.values() if isinstance(v, float))
    # A pass of the untrained network (global's "data" start), then the epoch's.
    assert len(passes) == 2
    x, labels = passes[-1]
    # The 1,500 images less the validation share (10%, drawn per class).
    assert x.shape[1] == 128 and 1300 < len(x) < 1500 and labels.shape == (len(x),)
    state = load_checkpoint(tmp_path / "checkpoint.pt")["loss"]["state_dict"]
    assert state["subcentre_mu"].shape == (10, 3, 128)
    # The global directions came from the same pass: each class's normalized sum.
    for c in range(10):
        mean = F.normalize(x[labels == c].sum(0), dim=0)
        torch.testing.assert_close(state["directions.mu"][c], mean.float())
    # And each sub-centre is the normalized mean of that class's points nearest to it.
    for c in range(10):
        points = x[labels == c]
        centres = state["subcentre_mu"][c].double()
        nearest = (points @ centres.t()).argmax(dim=1)
        for k in range(3):
            if (nearest == k).any():
                mean = F.normalize(points[nearest == k].sum(0), dim=0)
                torch.testing.assert_close(centres[k], mean, atol=1e-5, rtol=0)
