"""Model registry: a decorator, a dict, and `create_model` (the timm pattern).

A factory is a function `(embed_dim, **options) -> EmbeddingModel`; its keyword parameters *are*
the model's options, so `create_model` can reject an unknown option with the list of valid ones
before anything is built. Names of the form `family:variant` (e.g. `timm:resnet18`) go to a
factory registered with `family=True`, which receives the variant as its first argument.

`create_model` stores every option, defaults included, in `model.config`, so that
`create_model(**model.config)` rebuilds the same architecture even if a default changes later.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from vmfml.models.embedding import EmbeddingModel

Factory = Callable[..., EmbeddingModel]
F = TypeVar("F", bound=Factory)


@dataclass(frozen=True)
class _Entry:
    factory: Factory
    family: bool  # True: the name is `name:<variant>` and the variant is the first argument


_MODELS: dict[str, _Entry] = {}


def register_model(name: str, *, family: bool = False) -> Callable[[F], F]:
    """Register a model factory under `name` (decorator).

    Args:
        name: registry name; with `family=True`, the prefix of `name:<variant>` names.
        family: the factory takes the variant (the text after `name:`) as its first argument.

    Example:
        >>> @register_model("my_cnn")  # doctest: +SKIP
        ... def my_cnn(embed_dim: int | None = 128, width: int = 32) -> EmbeddingModel: ...
    """
    if ":" in name:
        raise ValueError(
            f"model name {name!r} must not contain ':' (it separates family and variant)"
        )

    def decorator(factory: F) -> F:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        params = list(inspect.signature(factory).parameters)
        if "embed_dim" not in params:
            raise TypeError(f"model factory {factory.__name__} must take an `embed_dim` argument")
        _MODELS[name] = _Entry(factory, family)
        return factory

    return decorator


def list_models() -> list[str]:
    """Registered names, sorted; a family is listed as `name:<variant>`."""
    return sorted(f"{n}:<variant>" if e.family else n for n, e in _MODELS.items())


def model_options(name: str) -> dict[str, Any]:
    """The options `name` accepts (besides `embed_dim`) with their defaults (`inspect.Parameter.empty`
    for a required one)."""
    entry, _ = _lookup(name)
    return {
        p.name: p.default
        for i, p in enumerate(inspect.signature(entry.factory).parameters.values())
        if p.name != "embed_dim" and not (entry.family and i == 0)
    }


def create_model(name: str, embed_dim: int | None = 128, **opts: Any) -> EmbeddingModel:
    """Build the registered model `name` with an `embed_dim`-dimensional L2-normalized output.

    Args:
        name: a name from `list_models()`, or `family:variant` for a family (`timm:resnet18`).
        embed_dim: output dimension D; None keeps the backbone's F features (no projection).
        **opts: the model's options (`model_options(name)` lists them).

    Returns:
        an `EmbeddingModel` whose `config` rebuilds it: `create_model(**model.config)`.

    Raises:
        ValueError: unknown name (listing the valid ones, with a close match) or unknown option
            (listing the model's valid options).
    """
    entry, variant = _lookup(name)
    valid = model_options(name)
    unknown = sorted(set(opts) - set(valid))
    if unknown:
        listed = ", ".join(f"{k}={v!r}" for k, v in valid.items()) or "(none)"
        raise ValueError(f"unknown option(s) {unknown} for model {name!r}; valid options: {listed}")
    missing = [k for k, v in valid.items() if v is inspect.Parameter.empty and k not in opts]
    if missing:
        raise ValueError(f"model {name!r} needs option(s) {missing}")
    args = (variant,) if entry.family else ()
    bound = inspect.signature(entry.factory).bind(*args, embed_dim=embed_dim, **opts)
    bound.apply_defaults()
    model = entry.factory(*bound.args, **bound.kwargs)
    config = {k: v for k, v in bound.arguments.items() if k in valid}
    model.config = {"name": name, "embed_dim": embed_dim, **config}
    return model


def _lookup(name: str) -> tuple[_Entry, str | None]:
    """The entry for `name` and the variant (for a family), or a ValueError listing valid names."""
    if not isinstance(name, str):
        raise ValueError(f"model name must be a string, got {type(name).__name__}")
    base, sep, variant = name.partition(":")
    entry = _MODELS.get(base)
    if entry is not None and entry.family and sep and variant:
        return entry, variant
    if entry is not None and not entry.family and not sep:
        return entry, None
    if entry is not None and entry.family:
        raise ValueError(f"model family {base!r} needs a variant: '{base}:<variant>'")
    close = difflib.get_close_matches(name, list(_MODELS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown model {name!r}.{hint} Valid models: {', '.join(list_models())}")
