"""all_reduce_sums and compute_class_sums sum over processes (two CPU processes, gloo)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vmfml.directions import AccumulateDirections, compute_class_sums

C, D = 3, 4


def shard(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(rank)
    x = torch.nn.functional.normalize(torch.randn(5, D, generator=gen, dtype=torch.float64), dim=1)
    return x, torch.tensor([0, 1, 2, 0, rank])


def worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        x, labels = shard(rank)
        directions = AccumulateDirections(C, D)
        directions.observe(x, labels)
        directions.all_reduce_sums()
        sums, counts = compute_class_sums(lambda images: images, [(x, labels)], C, "cpu")
        if rank == 0:
            torch.save(
                {"sums": directions.class_sums, "counts": directions.class_counts,
                 "pass_sums": sums, "pass_counts": counts},
                out,
            )  # fmt: skip
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_sums_are_reduced_over_processes(tmp_path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = str(tmp_path / "rank0.pt")
    mp.spawn(worker, args=(port, out), nprocs=2, join=True)
    result = torch.load(out)
    want_sums = torch.zeros(C, D, dtype=torch.float64)
    want_counts = torch.zeros(C, dtype=torch.int64)
    for rank in range(2):
        x, labels = shard(rank)
        want_sums.index_add_(0, labels, x)
        want_counts += torch.bincount(labels, minlength=C)
    assert want_counts.tolist() == [5, 3, 2]
    for prefix in ["", "pass_"]:
        torch.testing.assert_close(result[prefix + "sums"], want_sums, rtol=1e-14, atol=1e-15)
        assert torch.equal(result[prefix + "counts"], want_counts)
