"""Several processes, one run: the process group, shards of a data set, rows gathered in order.

`vmfml train`, `vmfml embed` and `vmfml index --data` run as one process, or as N processes
started by torchrun (`torchrun --nproc-per-node N -m vmfml train ...`), which sets RANK,
WORLD_SIZE, LOCAL_RANK and the rendezvous address in the environment. `setup()` joins the group
(NCCL between GPUs, gloo between CPUs); everything else here is a no-op in a single process, so
the callers read the same either way.

Data is split in contiguous shards (`shard_rows`): process r embeds rows [r S, (r + 1) S) with
S = ceil(N / world), and `gather_rows` puts the pieces back in the original order, so N
processes write exactly the file one process writes.
"""

from __future__ import annotations

import datetime
import os
import signal
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor, nn

__all__ = [
    "GlobalBatchNorm",
    "ProcessGroupLost",
    "all_sum",
    "barrier",
    "gather_pieces",
    "gather_rows",
    "global_batchnorm",
    "is_distributed",
    "is_main",
    "launched_by_torchrun",
    "local_device",
    "rank",
    "setup",
    "shard_rows",
    "sync_batchnorm",
    "world_size",
]

# How long a collective waits for the other processes before giving up with an error. A process
# that died is normally noticed at once (its socket closes); this bounds the rest, e.g. a process
# stopped in a debugger. VMFML_DIST_TIMEOUT (seconds) changes it.
DEFAULT_TIMEOUT_S = 300


class ProcessGroupLost(RuntimeError):
    """A collective failed because another process of the run ended or cannot be reached."""


def launched_by_torchrun() -> bool:
    """True when the environment describes a process group of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_distributed() -> bool:
    """True inside a multi-process run (the process group is up)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """The process that writes files and prints the report (rank 0)."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """A CUDA device becomes this process's own GPU (LOCAL_RANK) in a multi-process run."""
    if device.type == "cuda" and launched_by_torchrun():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


@contextmanager
def setup(device: torch.device) -> Iterator[torch.device]:
    """Join torchrun's process group for the duration of the block; yields this process's device.

    Without torchrun (WORLD_SIZE unset or 1) nothing is started and `device` is yielded as is.
    """
    if not launched_by_torchrun() or is_distributed():
        yield local_device(device)
        return
    device = local_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = datetime.timedelta(
        seconds=float(os.environ.get("VMFML_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    )
    dist.init_process_group(backend, timeout=timeout)
    previous = signal.signal(signal.SIGTERM, _stopped_by_launcher)
    try:
        yield device
    except RuntimeError as err:
        backend_error = isinstance(err, dist.DistError) or any(
            word in str(err) for word in ("gloo", "NCCL", "Connection reset", "Connection closed")
        )
        if not backend_error or isinstance(err, ProcessGroupLost):
            raise
        raise ProcessGroupLost(
            f"process {rank()} of {world_size()} lost contact with the others: another process "
            f"of this run ended or failed (its error is in its output or in torchrun's summary). "
            f"{str(err).splitlines()[0][:300]}"
        ) from err
    finally:
        signal.signal(signal.SIGTERM, previous)
        dist.destroy_process_group()


def _stopped_by_launcher(signum: int, frame: Any) -> None:
    # torchrun stops the other processes when one fails or dies: say so in one line, instead
    # of the traceback of wherever this process happened to be.
    print(
        f"vmfml: process {rank()} of {world_size()} stopped: another process of this run ended "
        "(its error is above, or in torchrun's summary below)",
        file=sys.stderr,
        flush=True,
    )
    os._exit(128 + signum)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_sum(values: Tensor) -> Tensor:
    """The sum over processes of `values` (a new tensor; `values` itself unchanged)."""
    if not is_distributed():
        return values
    total = values.clone()
    dist.all_reduce(total)
    return total


def shard_rows(n: int, of_rank: int | None = None) -> range:
    """The contiguous share of n rows of this process (or of process `of_rank`): process r has
    rows [r n // W, (r + 1) n // W), so shares differ by at most one row."""
    r = rank() if of_rank is None else of_rank
    world = world_size()
    return range(r * n // world, (r + 1) * n // world)


def gather_rows(local: Tensor, n: int) -> Tensor:
    """The rows of every process's `shard_rows(n)` share, concatenated in order: [n, ...] on every
    process. `local` holds this process's rows (on its device; NCCL needs them on the GPU)."""
    if not is_distributed():
        return local
    sizes = [len(shard_rows(n, r)) for r in range(world_size())]
    padded = local.new_zeros((max(sizes), *local.shape[1:]))
    padded[: len(local)] = local
    pieces = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(pieces, padded)
    return torch.cat([piece[:size] for piece, size in zip(pieces, sizes, strict=True)])


def global_batch(local: Tensor) -> Tensor:
    """The global batch of a training step, [W * b, ...]: every process's equal chunk of b rows
    in rank order (the order one process would see them in). This process's own rows keep their
    gradient, scaled by W on the way back, and the other rows are constants. A loss of the whole
    global batch then gets, after DistributedDataParallel averages the W processes' gradients,
    exactly the gradient one process would get: each process holds W times the gradient through
    its own rows, averaged to the sum over rows; the loss's own parameters (proxies) get the full
    gradient on every process, averaged to itself. Used for losses that are not a mean over
    samples (tuples and miners, Proxy-Anchor), which per-process chunks would change."""
    if not is_distributed():
        return local
    pieces = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(pieces, local.detach().contiguous())
    pieces[rank()] = _ScaleGradient.apply(local, float(world_size()))
    return torch.cat(pieces)


class _ScaleGradient(torch.autograd.Function):
    """The identity forward; the gradient times `scale` backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def gather_pieces(local: Tensor, capacity: int) -> list[Tensor]:
    """Every process's `local` rows (at most `capacity` of them, as many as each has), in rank
    order: [local] in a single process."""
    if not is_distributed():
        return [local]
    count = torch.tensor([len(local)], device=local.device)
    counts = [torch.empty_like(count) for _ in range(world_size())]
    dist.all_gather(counts, count)
    padded = local.new_zeros((capacity, *local.shape[1:]))
    padded[: len(local)] = local
    pieces = [torch.empty_like(padded) for _ in counts]
    dist.all_gather(pieces, padded)
    return [piece[: int(c)] for piece, c in zip(pieces, counts, strict=True)]


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch normalization over the global batch of all processes, on any device and backend.

    torch's SyncBatchNorm needs GPUs; this one sums the per-channel count, sum and sum of
    squares over the processes (a differentiable all-reduce, in float64 so that the variance
    keeps its digits), so N processes with B/N images each normalize as one process with B.
    In eval mode it is the plain BatchNorm it replaced.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        x64 = x.double()
        count = torch.full((1,), x.numel() / x.shape[1], dtype=torch.float64, device=x.device)
        stats = torch.cat([count, x64.sum(dims), (x64 * x64).sum(dims)])
        if is_distributed():
            with warnings.catch_warnings():  # deprecated, but its replacement has no autograd
                warnings.simplefilter("ignore", FutureWarning)
                stats = dist_fn.all_reduce(stats)
        channels = x.shape[1]
        n = stats[0]
        mean = stats[1 : 1 + channels] / n
        var = (stats[1 + channels :] / n - mean * mean).clamp_min(0.0)
        if self.track_running_stats and self.running_mean is not None:
            assert self.running_var is not None and self.num_batches_tracked is not None
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (
                    self.momentum
                    if self.momentum is not None
                    else 1.0 / float(self.num_batches_tracked)
                )
                unbiased = var * n / (n - 1).clamp_min(1.0)
                self.running_mean.mul_(1 - m).add_(m * mean.to(self.running_mean.dtype))
                self.running_var.mul_(1 - m).add_(m * unbiased.to(self.running_var.dtype))
        y = (x64 - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.double().view(shape) + self.bias.double().view(shape)
        y = y.to(x.dtype)
        # timm's BatchNormAct2d (EfficientNet, ...) normalizes, then applies dropout and its
        # activation: so does its global version.
        for name in ("drop", "act"):
            layer = getattr(self, name, None)
            if isinstance(layer, nn.Module):
                y = layer(y)
        return y


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """In a multi-process run, every BatchNorm of `module` normalizes over the global batch:
    timm's convert_sync_batchnorm (torch's SyncBatchNorm, and its own for BatchNormAct2d) on
    GPUs, `global_batchnorm` on CPUs. Weights, buffers and state_dict keys are unchanged, so
    checkpoints load into the plain model. In one process the module is left as it is (the
    float64 statistics cost 2-3x the plain layer's time on the small CNN)."""
    if not is_distributed():
        return module
    if device.type == "cuda":
        from timm.layers import convert_sync_batchnorm  # knows timm's BatchNormAct2d too

        return convert_sync_batchnorm(module)  # type: ignore[no-any-return]
    return global_batchnorm(module)


def global_batchnorm(module: nn.Module) -> nn.Module:
    """Turn every BatchNorm1d/2d/3d and timm BatchNormAct2d of `module` into its
    `GlobalBatchNorm` version, in place (same objects, parameters and buffers); any other
    batch-norm layer keeps its own statistics, with a warning."""
    for child in module.modules():
        kind = type(child)
        if kind in _GLOBAL_KINDS:
            child.__class__ = _GLOBAL_KINDS[kind]
        elif isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(
            child, GlobalBatchNorm
        ):
            warnings.warn(
                f"{kind.__name__} layers keep their own batch statistics in each process",
                stacklevel=2,
            )
    return module


def _global_kinds() -> dict[type[nn.Module], type[nn.Module]]:
    """The batch-norm classes `global_batchnorm` knows, and their global versions."""
    from timm.layers import BatchNormAct2d

    kinds = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, BatchNormAct2d)
    return {kind: type(f"Global{kind.__name__}", (GlobalBatchNorm, kind), {}) for kind in kinds}


_GLOBAL_KINDS = _global_kinds()
