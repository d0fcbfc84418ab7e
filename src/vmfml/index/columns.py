"""Item columns: the paths, labels and metadata of a million items in a few bytes each.

A Python list of a million `str` or `dict` objects costs 60-250 bytes an item, and one built from
a parsed items.json keeps the parser's memory arenas from going back to the system (measured at
200,000 items: an ivfpq gallery whose faiss index is 29 B/vector took 130 B/vector to open). These
columns keep their values packed in flat buffers instead:

- `TextColumn`: nullable strings as one UTF-8 buffer plus an end offset and a null flag per item
  (9 bytes an item plus its text; nothing at all while every value is None).
- `LabelColumn`: a class code per item (4 bytes) and one string per distinct label.
- `MetaColumn`: each item's metadata as compact JSON text in a `TextColumn`.

`mask(clause)` evaluates a filter clause (`vmfml.index.where.Clause`) over a whole column with
numpy for labels and paths (no Python loop over the items); metadata clauses decode only the items
that have metadata. Appends are amortised (the buffers grow geometrically). Not thread-safe: the
gallery's lock serialises every use.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar, overload

import numpy as np

from vmfml.index.where import Clause

# Paths may hold lone surrogates (undecodable file names, via os.fsdecode): keep them as they are.
_ERRORS = "surrogatepass"


def _fresh(text: str) -> str:
    """A new string object equal to `text`: one kept from a parsed file would keep the whole
    parse's memory arena alive."""
    return text.encode("utf-8", _ERRORS).decode("utf-8", _ERRORS)


T = TypeVar("T")


class _Column(Sequence[T]):
    """What every column shares: indexing (ints, negative ints, slices), iteration, extend."""

    def append(self, value: Any) -> None:
        raise NotImplementedError

    def _item(self, i: int) -> T:
        raise NotImplementedError

    def extend(self, values: Iterable[Any]) -> None:
        for value in values:
            self.append(value)

    @overload
    def __getitem__(self, i: int) -> T: ...

    @overload
    def __getitem__(self, i: slice) -> list[T]: ...

    def __getitem__(self, i: int | slice) -> T | list[T]:
        if isinstance(i, slice):
            return [self._item(j) for j in range(*i.indices(len(self)))]
        n = len(self)
        i = int(i)  # numpy integers too
        if not -n <= i < n:
            raise IndexError(f"item {i} out of range: the column holds {n} items")
        return self._item(i % n)

    def __iter__(self) -> Iterator[T]:
        return (self._item(i) for i in range(len(self)))

    def tolist(self) -> list[T]:
        return list(self)


class TextColumn(_Column[str | None]):
    """Nullable strings, packed: one UTF-8 buffer, an end offset and a null flag per item."""

    def __init__(self, values: Iterable[str | None] = ()) -> None:
        self._n = 0
        self._blob = bytearray()
        # Both None while every value is None: a column of Nones costs nothing per item.
        self._ends: array[int] | None = None
        self._null: bytearray | None = None
        self.extend(values)

    @classmethod
    def nulls(cls, n: int) -> TextColumn:
        column = cls()
        column._n = n
        return column

    def append(self, value: str | None) -> None:
        if value is None and self._ends is None:
            self._n += 1
            return
        if self._ends is None or self._null is None:
            self._ends = array("q", [0]) * self._n
            self._null = bytearray(b"\x01") * self._n
        if value is not None:
            self._blob += str(value).encode("utf-8", _ERRORS)
        self._ends.append(len(self._blob))
        self._null.append(value is None)
        self._n += 1

    def __len__(self) -> int:
        return self._n

    def _item(self, i: int) -> str | None:
        if self._ends is None or self._null is None or self._null[i]:
            return None
        start = self._ends[i - 1] if i else 0
        return self._blob[start : self._ends[i]].decode("utf-8", _ERRORS)

    def nbytes(self) -> int:
        """Bytes held by the buffers (not counting Python object headers)."""
        extra = 0 if self._ends is None else self._ends.itemsize * len(self._ends) + self._n
        return len(self._blob) + extra

    def present(self) -> np.ndarray:
        """Rows that hold a value (not None): a bool array."""
        if self._null is None:
            return np.zeros(self._n, dtype=bool)
        return np.frombuffer(self._null, dtype=np.uint8) == 0

    def match_mask(self, text: str, prefix: bool) -> np.ndarray:
        """Rows whose value equals `text` (or, with `prefix`, starts with it): a bool array."""
        out = np.zeros(self._n, dtype=bool)
        if self._ends is None or self._null is None or not self._n:
            return out
        wanted = text.encode("utf-8", _ERRORS)
        ends = np.array(self._ends, dtype=np.int64)
        starts = np.concatenate([[0], ends[:-1]])
        lengths = ends - starts
        fits = lengths >= len(wanted) if prefix else lengths == len(wanted)
        rows = np.flatnonzero(fits & self.present())
        blob = np.frombuffer(self._blob, dtype=np.uint8)
        try:
            for j, byte in enumerate(wanted):  # narrow the candidates one byte at a time
                if not len(rows):
                    break
                rows = rows[blob[starts[rows] + j] == byte]
        finally:
            del blob  # the view pins the buffer: release it before any append
        out[rows] = True
        return out


class LabelColumn(_Column[str | None]):
    """Class names as a code per item (4 bytes) and one string per distinct name."""

    def __init__(self, values: Iterable[str | None] = ()) -> None:
        self._codes = array("i")
        self._names: list[str] = []
        self._code_of: dict[str, int] = {}
        self.extend(values)

    @classmethod
    def nulls(cls, n: int) -> LabelColumn:
        column = cls()
        column._codes = array("i", [-1]) * n
        return column

    def append(self, value: Any) -> None:
        if value is None:
            self._codes.append(-1)
            return
        text = str(value)
        code = self._code_of.get(text)
        if code is None:
            code = len(self._names)
            name = _fresh(text)
            self._names.append(name)
            self._code_of[name] = code
        self._codes.append(code)

    def __len__(self) -> int:
        return len(self._codes)

    def _item(self, i: int) -> str | None:
        code = self._codes[i]
        return None if code < 0 else self._names[code]

    @property
    def names(self) -> list[str]:
        """The distinct labels, in the order they first appeared."""
        return list(self._names)

    def match_mask(self, text: str, prefix: bool) -> np.ndarray:
        """Rows whose label equals `text` (or, with `prefix`, starts with it): a bool array."""
        wanted = [
            c for n, c in self._code_of.items() if (n.startswith(text) if prefix else n == text)
        ]
        codes = np.array(self._codes, dtype=np.int32)
        return np.isin(codes, np.array(wanted, dtype=np.int32))


class MetaColumn(_Column[dict[str, Any] | None]):
    """Each item's metadata (a JSON object, or None) as compact JSON text."""

    def __init__(self, values: Iterable[dict[str, Any] | None] = ()) -> None:
        self._text = TextColumn()
        self.extend(values)

    @classmethod
    def nulls(cls, n: int) -> MetaColumn:
        column = cls()
        column._text = TextColumn.nulls(n)
        return column

    def append(self, value: dict[str, Any] | None) -> None:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False) if value else None
        self._text.append(text)

    def __len__(self) -> int:
        return len(self._text)

    def _item(self, i: int) -> dict[str, Any] | None:
        text = self._text[i]
        return None if text is None else dict(json.loads(text))

    def clause_mask(self, clause: Clause) -> np.ndarray:
        """Rows whose metadata passes a `meta.NAME` clause (decodes only items with metadata)."""
        out = np.zeros(len(self), dtype=bool)
        text = self._text
        key = f'"{clause.field[len("meta.") :]}"'
        for row in np.flatnonzero(text.present()).tolist():
            value = text[row]
            if value is not None and key in value:  # the key's exact JSON text: a cheap test
                out[row] = clause.matches(None, None, json.loads(value))
        return out


def clause_mask(
    clause: Clause, paths: TextColumn, labels: LabelColumn, metas: MetaColumn
) -> np.ndarray:
    """The rows of three columns that pass one filter clause."""
    if clause.field.startswith("meta."):
        return metas.clause_mask(clause)
    column: TextColumn | LabelColumn = labels if clause.field == "label" else paths
    return column.match_mask(str(clause.value), prefix=clause.op == "^=")
