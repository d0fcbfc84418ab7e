"""Search filters: `label=shoe`, `path^=shop7/`, `meta.camera=3`; several clauses are ANDed.

A clause is `FIELD OP VALUE`:

    FIELD  label | path | meta.NAME       (NAME: letters, digits, _ and -)
    OP     =  (equal)  |  ^=  (starts with; strings only)
    VALUE  for label and path, the text as written; for meta.NAME, a JSON scalar where it parses
           as one (3, 2.5, true, "3"), else the text: `meta.camera=3` matches {"camera": 3},
           `meta.camera="3"` matches {"camera": "3"}

Parsed once, strictly (`parse_where`), into `Clause` values; the stores evaluate them: the faiss
folder as a mask over its rows (`Clause.matches`), Milvus as a filter expression
(`milvus_expression`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

FIELDS = ("label", "path", "meta.NAME")
_CLAUSE = re.compile(r"^(label|path|meta\.([A-Za-z0-9_-]+))(\^=|=)(.*)$", re.DOTALL)

Scalar = str | int | float | bool


@dataclass(frozen=True)
class Clause:
    """One parsed filter clause: `field` is "label", "path" or "meta.NAME"."""

    field: str
    op: str  # "=" or "^="
    value: Scalar

    def matches(self, path: str | None, label: str | None, meta: dict[str, Any] | None) -> bool:
        """Whether an item with this path, label and metadata passes the clause."""
        if self.field == "label":
            actual: Any = label
        elif self.field == "path":
            actual = path
        else:
            actual = (meta or {}).get(self.field[len("meta.") :], _MISSING)
        if self.op == "^=":
            return isinstance(actual, str) and actual.startswith(str(self.value))
        return type(actual) is type(self.value) and actual == self.value

    def __str__(self) -> str:
        shown = self.value if isinstance(self.value, str) else json.dumps(self.value)
        return f"{self.field}{self.op}{shown}"


_MISSING = object()


def parse_where(where: str | Sequence[str] | Sequence[Clause] | None) -> tuple[Clause, ...]:
    """Parse filter clauses (one string, or several, ANDed); () for no filter.

    Raises:
        ValueError: a clause that is not `FIELD=VALUE` or `FIELD^=VALUE` with a known field, an
            empty value, or `^=` on a non-string meta value (the message shows the clause).
    """
    if where is None:
        return ()
    if isinstance(where, str):
        where = [where]
    clauses = []
    for clause in where:
        clauses.append(clause if isinstance(clause, Clause) else _parse_clause(clause))
    return tuple(clauses)


def _parse_clause(text: str) -> Clause:
    if not isinstance(text, str):
        raise ValueError(f"a filter clause must be a string like 'label=shoe', got {text!r}")
    match = _CLAUSE.match(text.strip())
    if match is None:
        raise ValueError(
            f"bad filter {text!r}: expected FIELD=VALUE or FIELD^=VALUE (prefix) with FIELD one "
            f"of {', '.join(FIELDS)}, e.g. 'label=shoe', 'path^=shop7/', 'meta.camera=3'"
        )
    field, _, op, raw = match.groups()
    if raw == "":
        raise ValueError(f"bad filter {text!r}: the value is empty")
    value: Scalar = raw
    if field.startswith("meta."):
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            parsed = raw
        if not isinstance(parsed, (str, int, float, bool)):
            raise ValueError(
                f"bad filter {text!r}: a meta value must be a string, number or true/false"
            )
        value = parsed
    if op == "^=" and not isinstance(value, str):
        raise ValueError(f"bad filter {text!r}: ^= (starts with) takes a string value")
    return Clause(field, op, value)


def milvus_expression(clauses: Sequence[Clause]) -> str:
    """The Milvus boolean expression of ANDed clauses ('' for none)."""
    parts = []
    for clause in clauses:
        if clause.field.startswith("meta."):
            target = f'meta["{clause.field[len("meta.") :]}"]'
        else:
            target = clause.field
        if clause.op == "^=":
            prefix = str(clause.value).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            parts.append(f"{target} like {_milvus_literal(prefix + '%')}")
        else:
            parts.append(f"{target} == {_milvus_literal(clause.value)}")
    return " and ".join(parts)


def _milvus_literal(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a double-quoted string with \" and \\ escaped
    return repr(value)
