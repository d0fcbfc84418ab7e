"""Fixtures of the index tests: real Fashion-MNIST PNG folders and an untrained checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from index_helpers import (
    CLASSES,
    GALLERY_PER_CLASS,
    QUERIES_PER_CLASS,
    Folders,
    make_checkpoint,
    write_pngs,
)


@pytest.fixture()
def folders(tmp_path: Path, fashion_sample: tuple[np.ndarray, np.ndarray]) -> Folders:
    x, y = fashion_sample
    gallery_picks, query_picks = {}, {}
    for c in range(len(CLASSES)):
        rows = np.flatnonzero(y == c)
        gallery_picks[c] = rows[:GALLERY_PER_CLASS]
        query_picks[c] = rows[GALLERY_PER_CLASS : GALLERY_PER_CLASS + QUERIES_PER_CLASS]
    gallery = tmp_path / "gallery"
    queries = tmp_path / "queries"
    gallery_pixels = write_pngs(gallery, x, y, gallery_picks)
    query_pixels = write_pngs(queries, x, y, query_picks)
    checkpoint = tmp_path / "model.pt"
    model = make_checkpoint(checkpoint, seed=0)
    return Folders(gallery, queries, checkpoint, model, gallery_pixels, query_pixels)
