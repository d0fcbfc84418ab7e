"""What the vMF loss and its mean-direction refresh cost beside the network, on this machine.

Times the training step (forward, loss, backward, optimizer step, and the strategy's per-step
work) of softmax cross-entropy, vMF `accumulate` and vMF `global` on the same network, data and
batches, interleaved round by round (A B C A B C ...) so that a noisy machine slows each alike;
then times `global`'s extra full pass over the training set and reports it per epoch.
`--methods all` times every method of `vmfml bench` the same way (the baselines with their
miners), so that their costs are compared in one run rather than across noisy benchmark runs.

    .venv/bin/python benchmarks/bench_epoch_cost.py [--steps 60] [--rounds 5] [--out benchmarks/results/epoch_cost.md]
    .venv/bin/python benchmarks/bench_epoch_cost.py --methods all --out benchmarks/results/epoch_cost_all.md
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from vmfml.bench.profiles import METHODS as BENCH_METHODS
from vmfml.directions import compute_class_sums
from vmfml.train.batches import epoch_generator, eval_batches, train_batches
from vmfml.train.config import load_config
from vmfml.train.datasets import build_datasets
from vmfml.train.loop import build_loss, build_model

# Always timed: the ratios below need them. The loss settings are `vmfml bench`'s.
BASELINE_METHODS = ("softmax", "vmf-accumulate", "vmf-global")


def chosen_methods(text: str) -> dict[str, dict[str, str]]:
    """The methods to time: BASELINE_METHODS always, plus those named. `vmf-global-random`
    steps exactly as `vmf-global` does."""
    names = (
        [n for n in BENCH_METHODS if n != "vmf-global-random"] if text == "all" else text.split(",")
    )
    unknown = [n for n in names if n not in BENCH_METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; valid: {', '.join(BENCH_METHODS)}, all")
    return {n: BENCH_METHODS[n] for n in dict.fromkeys([*BASELINE_METHODS, *names])}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=60, help="training steps per method per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: `vmfml train`'s (the bench uses 128)"
    )
    parser.add_argument("--out", default="benchmarks/results/epoch_cost.md")
    parser.add_argument(
        "--methods",
        default=",".join(BASELINE_METHODS),
        help="comma-separated method names of `vmfml bench`, or 'all'",
    )
    args = parser.parse_args()
    methods = chosen_methods(args.methods)

    overrides = {} if args.batch_size is None else {"batch_size": args.batch_size}
    # Every training image, as the benchmark's runs (the step cost does not depend on it).
    base = load_config(None, {"progress": False, "val_fraction": 0.0, **overrides})
    data = build_datasets(base)
    runs = {}
    for name, settings in methods.items():
        config = load_config(None, {**base.to_dict(), **settings})
        torch.manual_seed(0)
        model = build_model(config, data)
        loss = build_loss(config, data.num_classes)
        params = [*model.parameters(), *loss.parameters()]
        runs[name] = (config, model, loss, torch.optim.AdamW(params, lr=config.lr))
    preprocessing = dict(next(iter(runs.values()))[1].preprocessing)
    # The same batches for every method, prepared once so that only the step is timed.
    batches = list(
        train_batches(
            data.train, base.batch_size, preprocessing, base.augment, epoch_generator(0, 0)
        )
    )
    batches = batches[: args.steps]
    steps_per_epoch = len(data.train) // base.batch_size

    per_step: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.rounds):
        for name, (_, model, loss, opt) in runs.items():
            model.train()
            loss.train()
            start = time.perf_counter()
            for images, labels in batches:
                emb = model(images, normalize=loss.expects_normalized)
                value = loss(emb, labels)
                opt.zero_grad(set_to_none=True)
                value.backward()
                opt.step()
            per_step[name].append((time.perf_counter() - start) / len(batches))

    # global's extra work per period: a full inference pass over the training set plus the sums.
    _, model, loss, _ = runs["vmf-global"]
    refresh = []
    for _ in range(2):
        start = time.perf_counter()
        batches_512 = eval_batches(data.train, 512, preprocessing)
        sums, counts = compute_class_sums(model, batches_512, data.num_classes, "cpu")
        loss.directions.refresh(sums, counts)
        refresh.append(time.perf_counter() - start)
    # accumulate's refresh: the normalization of the accumulated sums.
    _, _, acc_loss, _ = runs["vmf-accumulate"]
    start = time.perf_counter()
    acc_loss.directions.refresh()
    acc_refresh = time.perf_counter() - start

    soft = statistics.median(per_step["softmax"])
    lines = [
        f"## Epoch cost: {', '.join(methods)}",
        "",
        f"Machine: {cpu_name()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}. "
        f"Network: {base.model} depth {base.depth}, embedding {base.embed_dim}, batch {base.batch_size}, "
        f"Fashion-MNIST ({len(data.train):,} training images, {steps_per_epoch} steps per epoch). "
        f"Median over {args.rounds} interleaved rounds of {len(batches)} steps.",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_epoch_cost.py --steps {args.steps} --rounds {args.rounds}"
        f" --methods {args.methods}"
        + ("" if args.batch_size is None else f" --batch-size {args.batch_size}")
        + "`",
        "",
        "| method | ms/step (median) | per-round ms/step | epoch s (steps only) | vs softmax | refresh s/epoch | epoch s with refresh |",
        "|---|--:|---|--:|--:|--:|--:|",
    ]
    for name in methods:
        med = statistics.median(per_step[name])
        rounds = ", ".join(f"{1000 * t:.1f}" for t in per_step[name])
        extra = (
            min(refresh)
            if name == "vmf-global"
            else (acc_refresh if name == "vmf-accumulate" else 0.0)
        )
        epoch = med * steps_per_epoch
        lines.append(
            f"| {name} | {1000 * med:.1f} | {rounds} | {epoch:.1f} | {med / soft:.3f} | {extra:.3f} | {epoch + extra:.1f} |"
        )
    paired = [a / s for a, s in zip(per_step["vmf-accumulate"], per_step["softmax"], strict=True)]
    lines += [
        "",
        f"accumulate / softmax step time, per round: {', '.join(f'{r:.3f}' for r in paired)} "
        f"(median {statistics.median(paired):.3f}).",
        f"global's full pass: {min(refresh):.1f} s per refresh = {min(refresh) / (soft * steps_per_epoch):.1%} "
        "of a softmax epoch when refreshed once per epoch.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
