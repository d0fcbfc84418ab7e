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
from typing import Any, overload

import numpy as np

from vmfml.index.where import Clause

# Paths may hold lone surrogates (undecodable file names, via os.fsdecode): keep them as they are.
_ERRORS = "surrogatepass"


def _fresh(text: str) -> str:
    """A new string object equal to `text`: one kept from a parsed file would keep the whole
    parse's memory arena alive."""
    return text.encode("utf-8", _ERRORS).decode("utf-8", _ERRORS)


class TextColumn(Sequence[str | None]):
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

    def extend(self, values: Iterable[str | None]) -> None:
        for value in values:
            self.append(value)

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> str | None: ...

    @overload
    def __getitem__(self, i: slice) -> list[str | None]: ...

    def __getitem__(self, i: int | slice) -> str | None | list[str | None]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        i = _checked(i, self._n)
        if self._ends is None or self._null is None or self._null[i]:
            return None
        start = self._ends[i - 1] if i else 0
        return self._blob[start : self._ends[i]].decode("utf-8", _ERRORS)

    def __iter__(self) -> Iterator[str | None]:
        return (self[i] for i in range(self._n))

    def tolist(self) -> list[str | None]:
        return list(self)

    def nbytes(self) -> int:
        """Bytes held by the buffers (not counting Python object headers)."""
        extra = 0 if self._ends is None else self._ends.itemsize * len(self._ends) + self._n
        return len(self._blob) + extra

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
        rows = np.flatnonzero(fits & (np.frombuffer(self._null, dtype=np.uint8) == 0))
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


class LabelColumn(Sequence[str | None]):
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

    def extend(self, values: Iterable[Any]) -> None:
        for value in values:
            self.append(value)

    def __len__(self) -> int:
        return len(self._codes)

    @overload
    def __getitem__(self, i: int) -> str | None: ...

    @overload
    def __getitem__(self, i: slice) -> list[str | None]: ...

    def __getitem__(self, i: int | slice) -> str | None | list[str | None]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        code = self._codes[_checked(i, len(self._codes))]
        return None if code < 0 else self._names[code]

    def __iter__(self) -> Iterator[str | None]:
        names = self._names
        return (None if code < 0 else names[code] for code in self._codes)

    def tolist(self) -> list[str | None]:
        return list(self)

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


class MetaColumn(Sequence[dict[str, Any] | None]):
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

    def extend(self, values: Iterable[dict[str, Any] | None]) -> None:
        for value in values:
            self.append(value)

    def __len__(self) -> int:
        return len(self._text)

    @overload
    def __getitem__(self, i: int) -> dict[str, Any] | None: ...

    @overload
    def __getitem__(self, i: slice) -> list[dict[str, Any] | None]: ...

    def __getitem__(self, i: int | slice) -> dict[str, Any] | None | list[dict[str, Any] | None]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        text = self._text[i]
        return None if text is None else dict(json.loads(text))

    def __iter__(self) -> Iterator[dict[str, Any] | None]:
        return (None if t is None else dict(json.loads(t)) for t in self._text)

    def tolist(self) -> list[dict[str, Any] | None]:
        return list(self)

    def clause_mask(self, clause: Clause) -> np.ndarray:
        """Rows whose metadata passes a `meta.NAME` clause (decodes only items with metadata)."""
        out = np.zeros(len(self), dtype=bool)
        text = self._text
        if text._null is None:
            return out
        key = f'"{clause.field[len("meta.") :]}"'
        for row in np.flatnonzero(np.frombuffer(text._null, dtype=np.uint8) == 0).tolist():
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


def _checked(i: int, n: int) -> int:
    i = int(i)
    if not -n <= i < n:
        raise IndexError(f"item {i} out of range: the column holds {n} items")
    return i % n
