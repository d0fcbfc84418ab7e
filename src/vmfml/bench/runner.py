"""Run a benchmark plan: one training run per spec, one JSON line per finished run.

The results folder holds `results.jsonl`, appended (and flushed) after every run, so whatever
finished survives an interruption, and a rerun skips every run whose id is already there with a
final status ("ok", or "diverged": a deterministic outcome, not retried). Runs that failed with
an error are recorded too, and retried next time.

Runs execute in this process (`jobs=1`) or side by side in `jobs` worker processes that share the
device (small networks leave a GPU mostly idle: several at once multiply throughput). Workers
start once and take run after run. Runs of one `phase` (workload) are not mixed with another
phase's, so the timings in one table were measured under the same conditions; each record says
how many runs were in flight.

With a time budget, a run is started only if its estimated duration (the mean of finished runs
with the same cost key) fits in the time left; at the deadline, runs still in flight are stopped
and not recorded.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import multiprocessing as mp
import os
import platform
import queue
import signal
import subprocess
import sys
import time
import traceback
from collections import defaultdict, deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmfml.bench.profiles import RunSpec

RESULTS_FILE = "results.jsonl"
FINAL_STATUSES = ("ok", "diverged")
# The repository's results folders (records are data, not code: see `git_commit`).
TRACKED_RESULTS = "benchmarks/results/"
DEFAULT_TRAIN_FN = "vmfml.train.loop:train"


@dataclass
class BenchSummary:
    """What a benchmark invocation did."""

    planned: int
    skipped_done: int
    finished: int = 0
    errors: int = 0
    diverged: int = 0
    skipped_for_time: int = 0
    cancelled: int = 0
    not_started: int = 0
    seconds: float = 0.0
    error_messages: list[str] = field(default_factory=list)


def results_path(results_dir: str | Path) -> Path:
    return Path(results_dir) / RESULTS_FILE


def read_records(results_dir: str | Path) -> list[dict[str, Any]]:
    """Every record of `results.jsonl`, in order; a truncated last line (a killed write) is skipped.

    Raises ValueError when `results_dir` is a file, or when a line is JSON but not a record (an
    object): the file is then not a benchmark's results, and nothing in it is to be trusted.
    """
    check_results_dir(results_dir)
    path = results_path(results_dir)
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            print(f"warning: {path}:{number} is not valid JSON; skipped", file=sys.stderr)
            continue
        if not isinstance(record, dict):
            raise ValueError(
                f"{path}:{number} is a JSON {type(record).__name__}, not a run's record (a JSON "
                "object on each line): is this a vmfml bench results file?"
            )
        records.append(record)
    return records


def check_results_dir(results_dir: str | Path) -> None:
    """ValueError unless `results_dir` is a folder or does not exist yet."""
    path = Path(results_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(
            f"--results {path} is a file, not a folder: give the folder that holds (or is to "
            "hold) results.jsonl, results.md and the plots"
        )


def rerun_targets(
    finished: dict[str, dict[str, Any]],
    code: tuple[str, bool | None],
    *,
    dirty_runs: bool = False,
    ids: Collection[str] = (),
) -> dict[str, str]:
    """The finished runs to make again, as {id today: the id stored in the record it replaces}.

    Chosen: with `dirty_runs`, every run whose last record was made on a tree with uncommitted
    changes (`git_dirty`); and the runs named in `ids` (today's id, as `--dry-run` lists it, or
    the record's stored id), e.g. runs whose outcome a code change moves. A run whose last record
    was already made by this code (`code`: the commit and whether the tree is dirty) is not made
    again, so an interrupted rerun resumes where it stopped. A rerun names the record it
    replaces: the old record's stored id was hashed from the config of its day.

    Raises:
        ValueError: a rerun asked for on a tree with uncommitted changes (it would only make
            more runs that cannot be traced to a commit), or an id no finished run has.
    """
    commit, dirty = code
    if not (dirty_runs or ids):
        return {}
    if dirty is not False:  # True, or None: not a git checkout
        raise ValueError(
            "a rerun on a source tree with uncommitted changes (or outside a git checkout) would "
            "only make more runs that cannot be traced to a commit: commit (or stash) the changes first, or run from a "
            "clean worktree (`git worktree add --detach DIR`)"
        )
    wanted = set(ids)
    known = set(finished) | {r["run_id"] for r in finished.values()}
    if wanted - known:
        raise ValueError(
            f"--rerun: no finished run has the id(s) {', '.join(sorted(wanted - known))} "
            "(`vmfml bench ... --dry-run` lists the plan's ids)"
        )
    targets = {}
    for current, record in finished.items():
        if record.get("git_commit") == commit and record.get("git_dirty") is False:
            continue  # made by this very code already
        if (dirty_runs and record.get("git_dirty") is True) or {current, record["run_id"]} & wanted:
            targets[current] = str(record["run_id"])
    return targets


def finished_records(results_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The last record with a final status of each finished run, by the id its settings have
    today: a config key added since it ran takes its default, which reproduces the old
    behaviour, so the run is still recognised as done."""
    return {
        current_id(r): r for r in read_records(results_dir) if r.get("status") in FINAL_STATUSES
    }


def current_id(record: dict[str, Any]) -> str:
    """The id a record's settings have under today's config (its stored id if they no longer parse)."""
    from vmfml.bench.profiles import run_id

    if "settings" not in record:
        return str(record["run_id"])
    settings = dict(record["settings"])
    # Runs recorded before validation existed trained on all their training images.
    settings.setdefault("val_fraction", 0.0)
    if settings.get("pretrained"):
        # Runs recorded before keep_start and freeze_bn existed kept their best trained epoch
        # and trained BatchNorm.
        settings.setdefault("keep_start", False)
        settings.setdefault("freeze_bn", False)
    if settings.get("loss") != "vmf":
        # Records made before the loss contract set directions for every method; it never
        # reached a loss other than vmf, and the config now refuses it there.
        settings.pop("directions", None)
    try:
        return run_id(settings)
    except ValueError:  # a key removed since: only the stored id can match
        return str(record["run_id"])


def add_cells(
    results_dir: str | Path, finished: dict[str, dict[str, Any]], specs: Sequence[RunSpec]
) -> None:
    """Record again (without retraining) a finished run that the plan puts in more table cells
    than its record names: e.g. the retrieval run that is also the default point of an ablation
    planned later. The copy keeps the record's id, so that it replaces the record in reports.

    Args:
        finished: `finished_records(results_dir)`.
        specs: the plan.
    """
    for spec in specs:
        found = finished.get(spec.run_id)
        if found is None:
            continue
        groups = [list(g) for g in found.get("groups", [])]
        new = [list(g) for g in spec.groups if list(g) not in groups]
        if new:
            append_record(results_dir, {**found, "groups": groups + new})


def append_record(results_dir: str | Path, record: dict[str, Any]) -> None:
    path = results_path(results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record, default=_json_default) + "\n")
        f.flush()
        os.fsync(f.fileno())


def script_provenance(record_path: str | Path) -> dict[str, Any]:
    """What every run record carries, for a benchmark script's figures (not a run of `vmfml
    bench`: the reference rows and the BatchNorm table of BENCHMARKS.md 5.8): `git_commit`,
    `git_dirty` (changes in the record's own folder do not count) and `machine`. Taken when the
    script starts, with the code it runs."""
    commit, dirty = git_commit(ignore=Path(record_path).parent)
    return {"git_commit": commit, "git_dirty": dirty, "machine": machine_info("cpu")}


def append_script_record(
    path: str | Path, record: dict[str, Any], provenance: dict[str, Any]
) -> None:
    """Append a benchmark script's figures and their `script_provenance` to a JSONL file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    finished = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    with path.open("a") as f:
        line = {**record, **provenance, "finished_at": finished}
        f.write(json.dumps(line, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy or torch scalars and arrays
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def git_commit(
    ignore: str | Path | None = None, repo: str | Path | None = None
) -> tuple[str, bool | None]:
    """(commit of the source tree, whether it has uncommitted changes); $VMFML_GIT_COMMIT when
    the tree is not a git checkout (a copy on another machine).

    Changes under `ignore` do not count: the benchmark's own results folder, when it is tracked,
    changes with every record and says nothing about the code that made them. Nor do changes
    under the repository's `benchmarks/results/`, where every results folder of the project
    lives (a rerun of one table must not count another table's new records as code).
    """
    repo = Path(repo) if repo is not None else Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("VMFML_GIT_COMMIT", "unknown"), None
    changed = [line[3:].split(" -> ")[-1] for line in status.splitlines() if line.strip()]
    changed = [path for path in changed if not path.startswith(TRACKED_RESULTS)]
    if ignore is not None:
        try:
            skip = Path(ignore).resolve().relative_to(repo.resolve()).as_posix() + "/"
        except ValueError:  # outside the repository: nothing of it is listed anyway
            skip = None
        if skip is not None:
            changed = [path for path in changed if not path.startswith(skip)]
    return commit, bool(changed)


def machine_info(device: str) -> dict[str, Any]:
    """Where a run ran: host, CPU, cores, accelerator, library versions."""
    import torch

    info: dict[str, Any] = {
        "host": platform.node(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["accelerator"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _load_fn(path: str) -> Callable[..., Any]:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def execute(task: dict[str, Any]) -> dict[str, Any]:
    """Train one run, or go on with one cut short, and return its record (never raises for a failed
    run, except interrupts).

    `task` holds the spec's fields plus `device`, `work_dir`, `threads`, `train_fn`,
    `keep_checkpoint`, `profile`, `git_commit`, `git_dirty`.
    """
    from vmfml.train.config import load_config
    from vmfml.train.loop import TrainingDiverged, resolve_device, resumable

    out_dir = Path(task["work_dir"]) / task["run_id"]
    record: dict[str, Any] = {
        **_failed_record(task),
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
    }
    start = time.perf_counter()
    try:
        overrides = {
            **task["settings"],
            "device": task["device"],
            "out_dir": str(out_dir),
            "threads": task["threads"],
            "plots": False,
            "progress": False,
        }
        config = load_config(None, overrides)
        record["machine"] = machine_info(str(resolve_device(config.device)))
        # A run cut short (Ctrl-C, a session's end) left its checkpoint: go on from its last epoch.
        resume = resumable(out_dir, config)
        if resume:
            record["resumed"] = True
        result = _load_fn(task["train_fn"])(config, resume=resume)
    except TrainingDiverged as err:
        record.update(status="diverged", error=str(err))
    except Exception as err:  # one failed run must not stop the benchmark: record it, go on
        record.update(
            error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc(limit=-6)
        )
    else:
        metrics = dict(result.metrics)
        metrics.pop("run", None)
        record.update(
            status="ok", timing=metrics.pop("timing", {}), metrics=metrics, history=result.history
        )
    record["wall_seconds"] = time.perf_counter() - start
    if not task["keep_checkpoint"]:
        # Checkpoints of big backbones would fill the results folder; metrics.json stays.
        (out_dir / "checkpoint.pt").unlink(missing_ok=True)
    return record


def _worker(tasks: Any, results: Any, worker_id: int) -> None:
    """A worker process: run tasks until told to stop (None). The parent handles Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        task = tasks.get()
        if task is None:
            return
        results.put((worker_id, execute(task)))


class _Estimates:
    """Mean wall time of finished runs, per cost key (then per phase): for the time budget."""

    def __init__(self) -> None:
        self.by_key: dict[str, list[float]] = defaultdict(list)
        self.by_phase: dict[str, list[float]] = defaultdict(list)

    def add(self, spec: RunSpec, seconds: float) -> None:
        self.by_key[spec.cost_key].append(seconds)
        self.by_phase[spec.phase].append(seconds)

    def seconds(self, spec: RunSpec) -> float:
        """0.0 when nothing comparable has finished yet (an unknown run is given its chance)."""
        for table, key in ((self.by_key, spec.cost_key), (self.by_phase, spec.phase)):
            if table[key]:
                return sum(table[key]) / len(table[key])
        return 0.0


def run_benchmark(
    specs: Sequence[RunSpec],
    results_dir: str | Path,
    *,
    profile: str,
    device: str = "auto",
    jobs: int = 1,
    work_dir: str | Path | None = None,
    time_budget: float | None = None,
    max_runs: int | None = None,
    keep_checkpoints: bool = False,
    progress: bool = True,
    train_fn: str = DEFAULT_TRAIN_FN,
    rerun_dirty: bool = False,
    rerun_ids: Collection[str] = (),
) -> BenchSummary:
    """Run the specs not yet finished in `results_dir`, appending one record per run.

    Args:
        specs: the plan (`vmfml.bench.profiles.plan`), most important first.
        results_dir: where `results.jsonl` is (created if missing).
        profile: the profile's name, written into each record.
        device: the training device of every run ("auto", "cpu", "cuda", ...).
        jobs: runs side by side (worker processes sharing the device); 1 runs in this process.
        work_dir: the runs' own folders (metrics.json, history.json, config.yaml); default
            `results_dir/runs`.
        time_budget: seconds from now after which no run is started and runs in flight are
            stopped; None: no limit.
        max_runs: start at most this many runs.
        keep_checkpoints: keep each run's checkpoint.pt (deleted by default: they are large).
        progress: a progress bar over the runs, with an ETA.
        train_fn: "module:function" with the signature of `vmfml.train.loop.train`.
        rerun_dirty, rerun_ids: finished runs to make again (`rerun_targets`); the new record
            replaces the old one in reports.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1; got {jobs}")
    if max_runs is not None and max_runs < 0:
        raise ValueError(f"max_runs must be >= 0; got {max_runs}")
    start = time.monotonic()
    deadline = None if time_budget is None else start + time_budget
    results_dir = Path(results_dir)
    check_results_dir(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    work_dir = Path(work_dir) if work_dir is not None else results_dir / "runs"
    commit, dirty = git_commit(ignore=results_dir)
    finished = finished_records(results_dir)
    replaces = rerun_targets(finished, (commit, dirty), dirty_runs=rerun_dirty, ids=rerun_ids)
    # A run made again stays in every table cell its old record was in (a plan of one
    # experiment does not know the cells of the others: an ablation's default point).
    old_groups = {i: [list(g) for g in finished[i].get("groups", [])] for i in replaces}
    finished = {i: r for i, r in finished.items() if i not in replaces}
    add_cells(results_dir, finished, specs)
    todo = [s for s in specs if s.run_id not in finished]
    summary = BenchSummary(planned=len(specs), skipped_done=len(specs) - len(todo))
    if max_runs is not None:
        summary.not_started += max(0, len(todo) - max_runs)
        todo = todo[:max_runs]
    threads = None if jobs == 1 else max(1, (os.cpu_count() or 1) // jobs)

    def task_of(spec: RunSpec) -> dict[str, Any]:
        from vmfml.bench.profiles import canonical_settings

        groups = [list(g) for g in spec.groups]
        groups += [g for g in old_groups.get(spec.run_id, []) if g not in groups]
        return {
            "run_id": spec.run_id,
            "method": spec.method,
            "seed": spec.seed,
            "groups": [tuple(g) for g in groups],
            "phase": spec.phase,
            "settings": spec.settings,
            "canonical": canonical_settings(spec.settings),
            "profile": profile,
            "device": device,
            "work_dir": str(work_dir),
            "threads": threads,
            "train_fn": train_fn,
            "keep_checkpoint": keep_checkpoints,
            "git_commit": commit,
            "git_dirty": dirty,
            "replaces": replaces.get(spec.run_id),
        }

    from tqdm.auto import tqdm

    # Outside a terminal (a log file, a pipe, CI) a bar's redraws would interleave with the
    # per-run lines: there, the one line per finished run is the progress.
    bar = tqdm(
        total=len(todo),
        desc=f"bench {profile}",
        unit="run",
        disable=not progress or not _is_terminal(sys.stderr),
        dynamic_ncols=True,
    )
    estimates = _Estimates()

    def finish(spec: RunSpec, record: dict[str, Any], in_flight: int) -> None:
        record["concurrent_runs"] = in_flight
        append_record(results_dir, record)
        estimates.add(spec, record["wall_seconds"])
        status = record["status"]
        if status == "ok":
            summary.finished += 1
        elif status == "diverged":
            summary.diverged += 1
        else:
            summary.errors += 1
            summary.error_messages.append(
                f"{spec.method} seed {spec.seed} ({spec.run_id}): {record.get('error')}"
            )
        bar.update(1)
        bar.write(_one_line(spec, record))

    def fits(spec: RunSpec) -> bool:
        return deadline is None or time.monotonic() + estimates.seconds(spec) <= deadline

    try:
        if jobs == 1:
            _run_serial(todo, task_of, finish, fits, summary, bar)
        else:
            _run_parallel(todo, task_of, finish, fits, summary, bar, jobs, deadline)
    finally:
        bar.close()
        summary.seconds = time.monotonic() - start
    return summary


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _run_serial(
    todo: Sequence[RunSpec],
    task_of: Callable[[RunSpec], dict[str, Any]],
    finish: Callable[[RunSpec, dict[str, Any], int], None],
    fits: Callable[[RunSpec], bool],
    summary: BenchSummary,
    bar: Any,
) -> None:
    for spec in todo:
        if not fits(spec):
            summary.skipped_for_time += 1
            bar.update(1)
            continue
        finish(spec, execute(task_of(spec)), 1)


def _run_parallel(
    todo: Sequence[RunSpec],
    task_of: Callable[[RunSpec], dict[str, Any]],
    finish: Callable[[RunSpec, dict[str, Any], int], None],
    fits: Callable[[RunSpec], bool],
    summary: BenchSummary,
    bar: Any,
    jobs: int,
    deadline: float | None,
) -> None:
    # spawn, not fork: CUDA cannot be used in a forked child, and a fresh interpreter is the same
    # on every platform.
    ctx = mp.get_context("spawn")
    results: Any = ctx.Queue()
    workers: dict[int, tuple[Any, Any]] = {}

    def start_worker(wid: int) -> None:
        tasks = ctx.Queue()
        proc = ctx.Process(
            target=_worker, args=(tasks, results, wid), daemon=True, name=f"vmfml-bench-{wid}"
        )
        proc.start()
        workers[wid] = (proc, tasks)

    for wid in range(min(jobs, len(todo))):
        start_worker(wid)
    pending = deque(todo)
    idle = set(workers)
    # worker -> (spec, the most runs in flight at once while it ran, itself included)
    in_flight: dict[int, tuple[RunSpec, int]] = {}
    try:
        while pending or in_flight:
            while idle and pending:
                spec = pending[0]
                if in_flight and any(s.phase != spec.phase for s, _ in in_flight.values()):
                    break  # a new phase starts when the previous one has finished
                pending.popleft()
                if not fits(spec):
                    summary.skipped_for_time += 1
                    bar.update(1)
                    continue
                wid = idle.pop()
                workers[wid][1].put(task_of(spec))
                in_flight[wid] = (spec, 0)
                in_flight.update(
                    {w: (s, max(peak, len(in_flight))) for w, (s, peak) in in_flight.items()}
                )
            if not in_flight:
                continue
            if deadline is not None and time.monotonic() >= deadline:
                summary.cancelled += len(in_flight)
                bar.write(f"time budget spent: stopping {len(in_flight)} run(s) in flight")
                return
            try:
                wid, record = results.get(timeout=1.0)
            except queue.Empty:
                for wid, (proc, _) in list(workers.items()):
                    if not proc.is_alive() and wid in in_flight:
                        # The process died (out of memory, a crash in native code): record, replace.
                        spec, peers = in_flight.pop(wid)
                        record = {
                            **_failed_record(task_of(spec)),
                            "error": f"worker process died (exit code {proc.exitcode})",
                        }
                        finish(spec, record, peers)
                        start_worker(wid)
                        idle.add(wid)
                continue
            spec, peers = in_flight.pop(wid)
            finish(spec, record, peers)
            idle.add(wid)
    finally:
        summary.not_started += len(pending)
        for proc, tasks in workers.values():
            if proc.is_alive() and not in_flight:
                tasks.put(None)
        for proc, _ in workers.values():
            proc.join(timeout=5 if not in_flight else 0)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()


def _failed_record(task: dict[str, Any]) -> dict[str, Any]:
    """A run's record before (or without) a result: status "error" until the run says otherwise."""
    return {
        "run_id": task["run_id"],
        "status": "error",
        "method": task["method"],
        "seed": task["seed"],
        "groups": [list(g) for g in task["groups"]],
        "phase": task["phase"],
        "profile": task["profile"],
        "settings": task["canonical"],
        "git_commit": task["git_commit"],
        "git_dirty": task["git_dirty"],
        "wall_seconds": 0.0,
        **({"replaces": task["replaces"]} if task.get("replaces") else {}),
    }


def _one_line(spec: RunSpec, record: dict[str, Any]) -> str:
    cells = ", ".join(f"{g[0]} {g[1]}" for g in spec.groups)
    head = f"[{record['status']}] {spec.method} seed {spec.seed} ({cells})"
    if record["status"] != "ok":
        return f"{head}: {record.get('error', '')[:300]}"
    metrics = record["metrics"]
    shown = [
        (k, metrics[k])
        for k in ("classifier_accuracy", "accuracy", "recall@1", "map@r", "nmi")
        if metrics.get(k) is not None
    ]
    numbers = " ".join(f"{k} {v:.4f}" for k, v in shown)
    return f"{head}: {numbers} in {record['wall_seconds']:.1f} s"
