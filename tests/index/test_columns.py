"""The packed item columns against plain Python lists (the reference) and `Clause.matches`."""

from __future__ import annotations

import random

import numpy as np
import pytest

from vmfml.index.columns import LabelColumn, MetaColumn, TextColumn, clause_mask
from vmfml.index.where import parse_where


def values(seed: int, n: int) -> tuple[list[str | None], list[str | None], list[dict | None]]:
    rng = random.Random(seed)
    shops = ["shop7/", "shop71/", "shöp/", "s/", "", "shop7"]
    paths: list[str | None] = [
        None if rng.random() < 0.2 else rng.choice(shops) + f"img{rng.randrange(50)}.png"
        for _ in range(n)
    ]
    paths[0] = "bad\udcffname.png"  # an undecodable file name, as os.fsdecode gives it
    labels: list[str | None] = [
        None if rng.random() < 0.1 else rng.choice(["shoe", "shoes", "bag", "b", "été"])
        for _ in range(n)
    ]
    metas: list[dict | None] = [
        None
        if rng.random() < 0.3
        else {"camera": rng.choice([3, "3", 3.5, True]), "note": rng.choice(["camera", "x"])}
        for _ in range(n)
    ]
    return paths, labels, metas


CLAUSES = [
    "label=shoe",
    "label^=sho",
    "label=été",
    "label=absent",
    "path^=shop7/",
    "path^=shop7",
    "path^=shöp/",
    "path=shop7",
    "path^=bad\udcff",
    "meta.camera=3",
    'meta.camera="3"',
    "meta.camera=3.5",
    "meta.camera=true",
    "meta.note=camera",
    "meta.missing=1",
]


@pytest.mark.parametrize("seed", [0, 1])
def test_columns_equal_lists_and_masks_equal_clause_matches(seed: int) -> None:
    paths, labels, metas = values(seed, 500)
    cp, cl, cm = TextColumn(paths[:200]), LabelColumn(labels[:200]), MetaColumn(metas[:200])
    for p, lab, m in zip(paths[200:], labels[200:], metas[200:], strict=True):  # appended live
        cp.append(p)
        cl.append(lab)
        cm.append(m)
    assert cp.tolist() == paths and list(cp) == paths and cp[-1] == paths[-1]
    assert cl.tolist() == labels and cl[3:9] == labels[3:9]
    assert cm.tolist() == [m or None for m in metas]
    for text in CLAUSES:
        [clause] = parse_where(text)
        expected = np.array(
            [clause.matches(p, lab, m) for p, lab, m in zip(paths, labels, metas, strict=True)]
        )
        got = clause_mask(clause, cp, cl, cm)
        assert got.dtype == bool and np.array_equal(got, expected), text
        # and after more appends (the buffers grow while earlier masks were taken)
        cp.append("shop7/late.png")
        cl.append("shoe")
        cm.append({"camera": 3})
        paths.append("shop7/late.png")
        labels.append("shoe")
        metas.append({"camera": 3})


def test_a_column_of_nones_holds_no_buffer_until_a_value_comes() -> None:
    column = TextColumn.nulls(1_000_000)
    assert len(column) == 1_000_000 and column.nbytes() == 0 and column[999_999] is None
    assert not column.match_mask("x", prefix=True).any()
    column.append("x/y")
    assert column[1_000_000] == "x/y" and column[5] is None
    assert column.match_mask("x", prefix=True).sum() == 1
    with pytest.raises(IndexError):
        column[1_000_001]
    labels = LabelColumn.nulls(3)
    assert labels.tolist() == [None, None, None] and labels.names == []


def test_labels_are_fresh_strings_not_the_callers() -> None:
    """A label kept from a parsed items.json would keep the parser's memory arena alive."""
    original = "".join(["sh", "oe"])
    column = LabelColumn([original, "shoe"])
    assert column[0] == original and column[0] is not original and column[1] is column[0]
