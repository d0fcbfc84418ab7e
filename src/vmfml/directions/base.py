"""MeanDirections: the state every mean-direction strategy shares (mu, class sums, class counts)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from vmfml.distributed import is_distributed

from .concentration import estimate_kappa

__all__ = ["ClassSums", "FullPassEmbeddings", "MeanDirections", "finite_rows"]

# A full pass over the training set: per-class sums [C, D] (float64) and counts [C] of unit
# embeddings, summed over every process (`compute_class_sums` behind a closure of the trainer's).
ClassSums = Callable[[], tuple[Tensor, Tensor]]


@runtime_checkable
class FullPassEmbeddings(Protocol):
    """A full pass that also hands over the embeddings themselves (the trainer's
    `train.loop.FullPass`), for what needs more than class sums (the vMF loss's sub-centres)."""

    def __call__(self) -> tuple[Tensor, Tensor]:
        """The class sums [C, D] and counts [C] of `ClassSums`."""
        ...

    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Unit embeddings [N, D] and labels [N] of the whole training set, on every process."""
        ...


# How many class indices a warning spells out before it summarises the rest.
_MAX_NAMED_CLASSES = 20
# The largest concentration estimate kept (R = 1 would give infinity).
_MAX_CONCENTRATION = 1e6


def finite_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """x [B, D] as float64 with its non-finite rows zeroed, and the mask [B] of finite rows.

    No value is read back to the host, so a training step on a GPU does not wait for it.
    """
    x = x.to(torch.float64)
    finite = torch.isfinite(x).all(dim=1)
    return torch.where(finite[:, None], x, 0.0), finite


class MeanDirections(nn.Module):
    """Class mean directions mu [C, D] of a vMF mixture, plus per-class sums to re-estimate them.

    The maximum-likelihood mean direction of class c is mu_c = S_c / ||S_c|| with S_c the sum of
    the class's unit embeddings. Subclasses decide where the sums come from and when mu changes:
    a full pass over the training set (`global`), the batches of the last period (`accumulate`),
    a running average (`ema`) or gradient descent (`learned`).

    State, all in the state_dict so that a resumed run continues bit for bit:
        mu            [C, D] unit rows (a buffer; a Parameter for `learned`), in the module's dtype.
        class_sums    [C, D] float64 sums of observed embeddings. float64 so that sums over a
                      whole epoch lose no digits and several processes can all-reduce them;
                      `.float()` / `.half()` on the module leave them float64.
        class_counts  [C] int64 number of embeddings in each sum.
        concentration [C] float64 each class's kappa estimated from the sums mu was last set
                      from (Banerjee et al.'s approximation from the mean resultant length
                      ||S_c|| / n_c); 0 until then. The vMF loss may use them (class_kappa).

    Args:
        num_classes: number of classes C.
        embed_dim: embedding size D.
        init_seed: seed of the generator that draws the initial mu (uniform on the sphere).
    """

    needs_full_pass: ClassVar[bool] = False
    # True when `end_period` does work, so that a refresh period means something.
    has_period: ClassVar[bool] = True
    mu: Tensor
    class_sums: Tensor
    class_counts: Tensor
    concentration: Tensor

    def __init__(self, num_classes: int, embed_dim: int, *, init_seed: int = 0) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("embed_dim", embed_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.init_seed = init_seed
        # A private CPU generator: the initial directions depend on init_seed only, not on the
        # global RNG state or the device.
        generator = torch.Generator().manual_seed(init_seed)
        initial = torch.randn(num_classes, embed_dim, generator=generator, dtype=torch.float64)
        self._register_mu(F.normalize(initial, dim=1).to(torch.get_default_dtype()))
        self.register_buffer("class_sums", torch.zeros(num_classes, embed_dim, dtype=torch.float64))
        self.register_buffer("class_counts", torch.zeros(num_classes, dtype=torch.int64))
        # Each class's concentration, estimated from the sums mu was last set from (0: never).
        self.register_buffer("concentration", torch.zeros(num_classes, dtype=torch.float64))

    def _register_mu(self, initial: Tensor) -> None:
        self.register_buffer("mu", initial)

    def _write_mu(self, new: Tensor) -> None:
        # Out of place: the current forward pass may still hold the old mu for its backward.
        self.mu = new.to(dtype=self.mu.dtype, device=self.mu.device)

    def directions(self) -> Tensor:
        """The current unit mean directions [C, D]."""
        return self.mu

    @torch.no_grad()
    def observe(self, x: Tensor, labels: Tensor) -> None:
        """Add a batch of detached unit embeddings x [B, D] with labels [B] to the class sums.

        Rows holding NaN or infinite values are skipped (neither summed nor counted), so one bad
        embedding never spoils a class's sum.
        """
        self._check_batch(x, labels)
        x, finite = finite_rows(x)
        self.class_sums.index_add_(0, labels, x)
        # index_add_ rather than bincount: bincount reads the largest label back from a GPU,
        # which would stall every training step.
        self.class_counts.index_add_(0, labels, finite.to(self.class_counts.dtype))

    def refresh(self, sums: Tensor | None = None, counts: Tensor | None = None) -> None:
        """Set mu from the given sums (or the accumulated ones) and clear the accumulators.

        Classes with no sample (zero count, or a zero sum) keep their previous mu, with a
        warning naming them. In multi-process training call `all_reduce_sums()` first when
        refreshing from the accumulators, so that every process computes the same mu.

        Args:
            sums: [C, D] per-class sums of unit embeddings (e.g. from `compute_class_sums`).
            counts: [C] number of embeddings in each sum; required when sums is given.
        """
        if sums is None:
            if counts is not None:
                raise ValueError("refresh() got counts without sums; pass both or neither")
            sums, counts = self.class_sums, self.class_counts
        elif counts is None:
            raise ValueError("refresh(sums) also needs counts (the number of samples per class)")
        self._set_mu_from(sums, counts)
        self.reset_accumulators()

    def init_from(self, sums: Tensor, counts: Tensor) -> None:
        """Set the initial mu from per-class sums [C, D] and counts [C] (accumulators untouched)."""
        self._set_mu_from(sums, counts)

    def reset_accumulators(self) -> None:
        """Zero the class sums and counts (the start of a new period)."""
        self.class_sums.zero_()
        self.class_counts.zero_()

    def all_reduce_sums(self) -> None:
        """Sum class_sums and class_counts over all processes; a no-op without torch.distributed."""
        if is_distributed():
            dist.all_reduce(self.class_sums)
            dist.all_reduce(self.class_counts)

    # ---- the training lifecycle (what the trainer calls; it never asks which strategy runs) ----

    def start(self, full_pass: ClassSums) -> None:
        """Before the first step of a new run; `full_pass` is only called by strategies that need it."""

    def end_period(self, full_pass: ClassSums) -> None:
        """At the end of a period: mu from the sums of every process's batches since the last one."""
        self.all_reduce_sums()
        self.refresh()

    def checkpoint_state(self) -> dict[str, Any]:
        """The state to save, identical on every process: the accumulators summed over processes.

        The accumulators of this process are left as they are (training goes on with them).
        """
        state = self.state_dict()
        if is_distributed():
            for key in ("class_sums", "class_counts"):
                state[key] = state[key].clone()
                dist.all_reduce(state[key])
        return state

    def restore_state(self, state: dict[str, Any]) -> None:
        """Load a `checkpoint_state`, whatever the number of processes that saved it: process 0
        holds the saved accumulators, the others start theirs from zero, so the total is kept."""
        self.load_state_dict(state)
        if is_distributed() and dist.get_rank() != 0:
            self.reset_accumulators()

    @torch.no_grad()
    def _set_mu_from(self, sums: Tensor, counts: Tensor) -> None:
        shape = (self.num_classes, self.embed_dim)
        if tuple(sums.shape) != shape:
            raise ValueError(f"sums must have shape {list(shape)}, got {list(sums.shape)}")
        if tuple(counts.shape) != (self.num_classes,):
            raise ValueError(
                f"counts must have shape [{self.num_classes}], got {list(counts.shape)}"
            )
        sums = sums.to(device=self.mu.device, dtype=torch.float64)
        counts = counts.to(self.mu.device)
        norms = sums.norm(dim=1, keepdim=True)
        valid = (counts > 0) & (norms.squeeze(1) > 0)
        new = torch.where(valid[:, None], sums / norms.clamp_min(1e-300), self.mu.double())
        resultant = norms.squeeze(1) / counts.to(torch.float64).clamp_min(1.0)
        estimate = estimate_kappa(resultant.clamp(0.0, 1.0), self.embed_dim)
        # R = 1 (a class of one image, or identical embeddings) has no finite estimate.
        estimate = estimate.clamp(max=_MAX_CONCENTRATION)
        self.concentration = torch.where(valid, estimate, self.concentration)
        missing = (~valid).nonzero().flatten().tolist()
        if missing:
            named = ", ".join(str(c) for c in missing[:_MAX_NAMED_CLASSES])
            more = (
                f" and {len(missing) - _MAX_NAMED_CLASSES} more"
                if len(missing) > _MAX_NAMED_CLASSES
                else ""
            )
            warnings.warn(
                f"{len(missing)} of {self.num_classes} classes had no samples to estimate "
                f"their mean direction from and keep their previous one: classes {named}{more}",
                stacklevel=3,
            )
        self._write_mu(new)

    def _check_batch(self, x: Tensor, labels: Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.embed_dim:
            raise ValueError(f"x must have shape [B, {self.embed_dim}], got {list(x.shape)}")
        if labels.shape != (x.shape[0],):
            raise ValueError(
                f"labels must have shape [{x.shape[0]}] to match x, got {list(labels.shape)}"
            )

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # Checkpoints written before the concentration estimates existed load as "never estimated".
        state_dict.setdefault(
            prefix + "concentration", torch.full_like(self.concentration, torch.nan)
        )
        super()._load_from_state_dict(state_dict, prefix, *args)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> MeanDirections:
        # Module.float()/.half()/.to(dtype) cast every floating buffer; the sums must stay
        # float64 (see the class docstring), so re-apply only the move between devices.
        sums, concentration = self.class_sums, self.concentration
        super()._apply(fn, recurse)
        self.class_sums = sums.to(device=self.class_sums.device)
        self.concentration = concentration.to(device=self.concentration.device)
        return self

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, embed_dim={self.embed_dim}"
