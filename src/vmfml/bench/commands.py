"""`vmfml bench`: run the loss comparison, or (`vmfml bench report`) re-make its tables and plots.

vmfml bench --profile quick|cpu|full [--experiments classification,retrieval,ablations]
            [--seeds 3] [--results DIR (default runs/bench)] [--device auto] [--max-runs N] [--jobs N]
            [--time-budget SECONDS] [--methods vmf-margin,vmf-subcentre]
            [--backbones small_cnn,efficientnet_lite0_frozen_bn] [--rerun-dirty] [--rerun IDS]
vmfml bench report --results DIR
vmfml bench report --update BENCHMARKS.md   (remake the file's generated tables from the records)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from vmfml.bench.profiles import EXPERIMENTS, METHODS, PROFILES

# Beside `vmfml train`'s runs/ (ignored by git), not in the repository's root.
DEFAULT_RESULTS = "runs/bench"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        nargs="?",
        default="run",
        choices=("run", "report"),
        help="run the benchmark (default), or only re-make the report from the results folder",
    )
    parser.add_argument(
        "--profile",
        default="quick",
        help=f"budgets: {', '.join(f'{p.name} ({p.description})' for p in PROFILES.values())} (default: quick)",
    )
    parser.add_argument(
        "--experiments",
        default=",".join(EXPERIMENTS),
        help=f"comma-separated subset of {','.join(EXPERIMENTS)} (default: all)",
    )
    parser.add_argument(
        "--methods",
        default=None,
        help="comma-separated methods that replace those of the profile's classification and "
        f"retrieval tables (tuning runs and ablations unchanged): {', '.join(METHODS)} "
        "(default: the profile's)",
    )
    parser.add_argument(
        "--backbones",
        default=None,
        help="comma-separated backbones of the retrieval experiment to plan (default: all of "
        "the profile's; a choice another backbone's records make is still read from them)",
    )
    parser.add_argument(
        "--seeds", type=int, default=None, help="seeds per method (default: the profile's)"
    )
    parser.add_argument(
        "--results",
        default=DEFAULT_RESULTS,
        help=f"results folder: results.jsonl, results.md, plots (default: {DEFAULT_RESULTS}, "
        "under the runs folder that git ignores)",
    )
    parser.add_argument(
        "--update",
        metavar="FILE",
        default=None,
        help="with `report`: rewrite the generated tables of a markdown file (BENCHMARKS.md) "
        "from the records their markers name, instead of the results folder's report",
    )
    parser.add_argument(
        "--work-dir", default=None, help="folder of the runs' own files (default: RESULTS/runs)"
    )
    parser.add_argument(
        "--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (default: auto)"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="runs side by side on the device (default: 1 on a CPU, 8 on a GPU)",
    )
    parser.add_argument(
        "--max-runs",
        type=int,
        default=None,
        help="start at most N runs (finished runs are never redone)",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="seconds: start no run that would not finish in time, stop the rest",
    )
    parser.add_argument(
        "--keep-checkpoints", action="store_true", help="keep every run's checkpoint.pt"
    )
    parser.add_argument(
        "--rerun-dirty",
        action="store_true",
        help="run again the finished runs whose records were made on a source tree with "
        "uncommitted changes (git_dirty); the new records replace them in the report. Needs a "
        "clean tree",
    )
    parser.add_argument(
        "--rerun",
        metavar="IDS",
        default=None,
        help="comma-separated ids of finished runs to make again with this code (e.g. runs "
        "whose outcome a code change moves; --dry-run lists the ids); skipped once a record "
        "made at this commit exists. Needs a clean tree",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="list the runs the plan holds and which are done; train nothing",
    )
    parser.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar (there is none when stderr is not a terminal: one line per run)",
    )


def default_jobs(device: str) -> int:
    """One run at a time on a CPU (they would only compete for its cores); 8 on a GPU."""
    from vmfml.train.loop import resolve_device

    if resolve_device(device).type != "cuda":
        return 1
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def size_warning(profile: str, device: str) -> str | None:
    """A warning when the `full` profile (sized for a GPU) is about to run on a CPU."""
    from vmfml.train.loop import resolve_device

    if profile != "full" or resolve_device(device).type == "cuda":
        return None
    return (
        "warning: the full profile is sized for one GPU (about 8 minutes on an H100); on a "
        "2-core CPU it would take some 14 hours (an estimate from the cpu profile's speeds: the "
        "small CNN trains at about 1,500 images/s there, EfficientNet-Lite0 at about 90). "
        "`--profile cpu` holds the reduced budgets measured on a 2-core CPU; the progress bar "
        "shows the time left, and an interrupted benchmark resumes where it stopped."
    )


def run(args: argparse.Namespace) -> int:
    from vmfml.bench.report import write_report
    from vmfml.bench.runner import check_results_dir

    if args.update is not None:
        if args.action != "report":
            raise ValueError("--update goes with `vmfml bench report`")
        from vmfml.bench.published import update_file

        changed = update_file(args.update)
        print(f"{args.update}: {changed} generated table(s) changed")
        return 0
    results = Path(args.results)
    check_results_dir(results)
    if args.action == "report":
        if not (results / "results.jsonl").is_file():
            raise FileNotFoundError(
                f"no results.jsonl in {results}; run `vmfml bench --results {results}` first"
            )
        paths = write_report(results)
        print("\n".join(f"wrote {p}" for p in paths))
        return 0

    from vmfml.bench.profiles import (
        get_profile,
        parse_backbones,
        parse_experiments,
        parse_methods,
        plan,
    )
    from vmfml.bench.runner import (
        finished_records,
        git_commit,
        read_records,
        rerun_targets,
        run_benchmark,
    )
    from vmfml.bench.selection import choices_report

    profile = get_profile(args.profile)
    experiments = parse_experiments(args.experiments)
    methods = None if args.methods is None else parse_methods(args.methods)
    backbones = None if args.backbones is None else parse_backbones(profile, args.backbones)
    specs = plan(profile, experiments, args.seeds, read_records(results), methods, backbones)
    for line in choices_report(profile, read_records(results)):
        print(f"chosen on validation: {line}")
    rerun_ids = (
        [] if args.rerun is None else [i.strip() for i in args.rerun.split(",") if i.strip()]
    )
    if args.dry_run:
        finished = finished_records(results)
        again = rerun_targets(
            finished, git_commit(ignore=results), dirty_runs=args.rerun_dirty, ids=rerun_ids
        )
        done = set(finished) - set(again)
        for spec in specs:
            cells = ", ".join(f"{g.experiment} {g.setting}" for g in spec.groups)
            print(
                f"{'done' if spec.run_id in done else 'todo'}  {spec.run_id}  {spec.method:<18} seed {spec.seed}  {cells}"
            )
        print(f"{len(specs)} runs, {sum(s.run_id in done for s in specs)} done")
        return 0
    jobs = args.jobs if args.jobs is not None else default_jobs(args.device)
    warning = size_warning(profile.name, args.device)
    if warning:
        print(warning, file=sys.stderr)
    # A run chosen on validation (a tuned setting, the best methods of another table) enters
    # the plan once the runs it reads have finished: plan again after each pass.
    failed = 0
    deadline = None if args.time_budget is None else time.monotonic() + args.time_budget
    while True:
        summary = run_benchmark(
            specs,
            results,
            profile=profile.name,
            device=args.device,
            jobs=jobs,
            work_dir=args.work_dir,
            time_budget=None if deadline is None else max(0.0, deadline - time.monotonic()),
            max_runs=args.max_runs,
            keep_checkpoints=args.keep_checkpoints,
            progress=args.progress,
            rerun_dirty=args.rerun_dirty,
            rerun_ids=rerun_ids,
        )
        failed += summary.errors
        print(
            f"\n{summary.planned} runs planned: {summary.skipped_done} already done, {summary.finished} finished, "
            f"{summary.diverged} diverged, {summary.errors} failed, {summary.skipped_for_time} skipped for time, "
            f"{summary.cancelled} stopped at the deadline, {summary.not_started} not started ({summary.seconds:.0f} s)"
        )
        for message in summary.error_messages:
            print(f"  failed: {message}")
        records = read_records(results)
        replanned = plan(profile, experiments, args.seeds, records, methods, backbones)
        known = {s.run_id for s in specs}
        if args.max_runs is not None or all(s.run_id in known for s in replanned):
            break
        for line in choices_report(profile, records):
            print(f"chosen on validation: {line}")
        specs = replanned
    if (results / "results.jsonl").is_file():
        for path in write_report(results):
            print(f"wrote {path}")
    return 1 if failed else 0
