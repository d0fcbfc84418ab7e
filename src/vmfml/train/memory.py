"""Will the run fit in memory? Estimated before training, so that a run that cannot fit is
refused with what would fit, not killed by the kernel without a word (`--image-size 2048`).

The estimate runs the network once on the `meta` device (shapes only: no memory, no compute)
and adds up the outputs of its layers for one image: what a training step keeps for the
backward pass. A training step holds that times the images each process takes; the evaluation,
without gradients, holds about two layers' outputs times its batch. The estimate is a lower
bound (the optimizer, the allocator and the data add to it), so a refusal is certain.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

GIB = 2**30


@dataclass
class Activations:
    """The elements a forward pass of one image produces: in all layers, and in the largest."""

    total: int
    largest: int


def activations_per_image(model: nn.Module, input_size: tuple[int, ...]) -> Activations | None:
    """The layer outputs of `model` on one image of `input_size` (C, H, W); None when the model
    cannot run on the meta device (the estimate is then skipped)."""
    sizes: list[int] = []

    def record(module: nn.Module, inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            sizes.append(output.numel())

    try:
        meta = copy.deepcopy(model).to("meta")
        with _hooks(meta, record):
            meta.eval()(torch.empty((1, *input_size), device="meta"))
    except Exception:  # an operation without a meta kernel: no estimate, no refusal
        return None
    sizes.append(math.prod(input_size))
    return Activations(total=sum(sizes), largest=max(sizes))


@contextmanager
def _hooks(model: nn.Module, hook: object) -> Iterator[None]:
    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]  # type: ignore[arg-type]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def available_bytes(device: torch.device) -> int | None:
    """Free memory of `device` (CUDA: the GPU's; CPU: the machine's available RAM); None when
    unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(
    model: nn.Module,
    input_size: tuple[int, ...],
    images_per_step: int,
    eval_batch: int,
    bytes_per_element: int,
    device: torch.device,
    what: str,
) -> None:
    """Refuse (ValueError) a run whose training step or evaluation batch cannot fit in the
    memory `device` has free, saying which image size and batch size would."""
    acts = activations_per_image(model, input_size)
    free = available_bytes(device)
    if acts is None or free is None:
        return
    train = images_per_step * acts.total * bytes_per_element
    evaluate = eval_batch * 2 * acts.largest * bytes_per_element
    need = max(train, evaluate)
    if need <= free:
        return
    side = int(input_size[-1])
    # Layer outputs grow with the pixels: the side that fits shrinks with the square root.
    fitting_side = max(1, int(side * math.sqrt(free / need)) // 8 * 8)
    where = "the GPU's free memory" if device.type == "cuda" else "the memory available here"
    if train >= evaluate:
        fitting_batch = int(free / (acts.total * bytes_per_element))
        hint = f"about --image-size {fitting_side} fits at this batch size" + (
            f", or --batch-size {fitting_batch} at this image size" if fitting_batch >= 1 else ""
        )
        step = f"a training step of {images_per_step} images"
    else:
        hint = f"about --image-size {fitting_side} fits"
        step = f"the evaluation, {eval_batch} images at a time,"
    raise ValueError(
        f"{what} at {side} px does not fit: {step} needs at least {need / GIB:.1f} GiB "
        f"({acts.total * bytes_per_element / 2**20:.0f} MiB of layer outputs per image) but "
        f"{where} is {free / GIB:.1f} GiB; {hint}"
    )
