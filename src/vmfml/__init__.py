"""vmfml: directional-statistics deep metric learning on the unit hypersphere."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["VMFLoss", "__version__", "create_model"]


def __getattr__(name: str) -> Any:
    # Lazy re-exports keep `import vmfml` (and the CLI's start-up) light.
    if name == "VMFLoss":
        from vmfml.losses.vmf import VMFLoss

        return VMFLoss
    if name == "create_model":
        from vmfml.models.registry import create_model

        return create_model
    raise AttributeError(f"module 'vmfml' has no attribute {name!r}")
