"""From `results.jsonl` to `results.md`: mean ± std over seeds per method and setting, and plots.

Tables (markdown, the ones BENCHMARKS.md quotes):
- classification: test accuracy of each loss's own classifier by depth (claims 1 and 2), the
  nearest class-mean accuracy (defined the same way for every loss) and the calibration error;
- retrieval per backbone: Recall@K, MAP@R, R-Precision, NMI on the unseen classes (claim 3);
- ablations: the vMF loss against kappa, the embedding dimension and the refresh period;
- cost: seconds per epoch and training images per second of every method, and the extra cost of
  the global mean directions against accumulated ones, from the same runs.

Each cell is `mean ± std` (sample standard deviation over seeds, in percent for rates), with the
number of seeds when a cell has fewer than the others; the best mean of a column is bold.
Only runs with status "ok" enter the statistics; failed and diverged runs are counted. A row
with a run made on a source tree with uncommitted changes is marked † (counted under its table:
to be rerun at a clean commit). The claims table pairs methods by seed and prints the verdict of
the rule fixed in advance (`vmfml.bench.stats.verdict`: beats, trails or level).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmfml.bench.plots import (
    plot_ablations,
    plot_accuracy_vs_depth,
    plot_recall_at_1,
    plot_validation_curves,
)
from vmfml.bench.profiles import ABLATIONS, PROFILES
from vmfml.bench.runner import FINAL_STATUSES, read_records
from vmfml.bench.selection import value_label
from vmfml.bench.stats import (
    VERDICT_RULE,
    Stat,
    cell_stat,
    method_order,
    metric,
    paired_differences,
    setting_order,
    summarize,
    verdict,
)
from vmfml.files import write_text_atomic

REPORT_FILE = "results.md"
# Settings worth naming above a table when every run of it shares them.
_SHOWN_SETTINGS = (
    "data",
    "split",
    "model",
    "depth",
    "width",
    "pretrained",
    "image_size",
    "embed_dim",
    "train_subset",
    "val_fraction",
    "split_seed",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "weight_decay",
    "augment",
    "kappa",
    "refresh_period",
)
_VMF_SETTINGS = ("kappa", "refresh_period")
_EXPERIMENT_TITLES = {
    "classification": "Classification",
    "retrieval": "Retrieval of unseen classes",
    **{name: ablation.title for name, ablation in ABLATIONS.items()},
}


def latest_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last record of each run id: a retried run replaces its failed attempt, and a run made
    again at a clean commit (`vmfml bench --rerun-dirty`) the record it names in `replaces`
    (made on a tree with uncommitted changes, its id hashed from the config of its day) once
    the rerun has finished (a failed rerun leaves it in place)."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        latest.pop(record["run_id"], None)
        if record.get("replaces") and record.get("status") in FINAL_STATUSES:
            latest.pop(record["replaces"], None)
        latest[record["run_id"]] = record
    return list(latest.values())


def by_cell(records: Iterable[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """(experiment, setting, method) -> the ok records of that table cell."""
    cells: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record.get("status") != "ok":
            continue
        for experiment, setting in record["groups"]:
            cells[(experiment, setting, record["method"])].append(record)
    return cells


# --- formatting ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    percent: bool = True
    higher_is_better: bool | None = True  # None: no "best" marked (costs, settings)
    digits: int = 1


def format_stat(stat: Stat | None, column: Column, full_n: int) -> str:
    if stat is None:
        return "–"
    scale = 100.0 if column.percent else 1.0
    text = f"{stat.mean * scale:.{column.digits}f}"
    if stat.n > 1:
        text += f" ± {stat.std * scale:.{column.digits}f}"
    if stat.n < full_n:
        text += f" (n={stat.n})"
    return text


def markdown_table(
    header: Sequence[str],
    rows: Sequence[tuple[str, Sequence[Stat | None]]],
    columns: Sequence[Column],
) -> str:
    """A markdown table: one row label then one `mean ± std` cell per column; best mean bold."""
    full_n = max((s.n for _, stats in rows for s in stats if s is not None), default=0)
    best: dict[int, float] = {}
    for j, column in enumerate(columns):
        means = [stat.mean for _, stats in rows if (stat := stats[j]) is not None]
        if column.higher_is_better is not None and len(means) > 1:
            best[j] = max(means) if column.higher_is_better else min(means)
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["--:"] * (len(header) - 1)) + "|",
    ]
    for label, stats in rows:
        cells = []
        for j, (stat, column) in enumerate(zip(stats, columns, strict=True)):
            text = format_stat(stat, column, full_n)
            if stat is not None and j in best and stat.mean == best[j]:
                text = f"**{text}**"
            cells.append(text)
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return "\n".join(lines)


def shared_settings(records: Sequence[dict[str, Any]]) -> str:
    """The notable settings every record shares, and the seeds: "data fashion-mnist, epochs 4, ..."."""
    parts = []
    only_vmf = all(r["settings"].get("loss") == "vmf" for r in records)
    for key in _SHOWN_SETTINGS:
        if key in _VMF_SETTINGS and not only_vmf:
            continue  # kappa and the refresh period mean nothing to the other losses
        values = {repr(r["settings"].get(key)) for r in records}
        if len(values) == 1 and records[0]["settings"].get(key) is not None:
            parts.append(f"{key} {records[0]['settings'][key]}")
    seeds = sorted({r["seed"] for r in records})
    parts.append(f"seeds {', '.join(map(str, seeds))}")
    return ", ".join(parts)


DIRTY_MARK = "†"


def is_dirty(record: dict[str, Any]) -> bool:
    """Whether a run was made on a source tree with uncommitted changes (its `git_dirty`)."""
    return record.get("git_dirty") is True


def marked(label: str, records: Iterable[dict[str, Any]]) -> str:
    """A row's label, with DIRTY_MARK when one of its runs comes from a tree with uncommitted
    changes: its figures cannot be traced to a named commit, and the run is to be redone."""
    return f"{label} {DIRTY_MARK}" if any(is_dirty(r) for r in records) else label


def dirty_note(records: Sequence[dict[str, Any]]) -> list[str]:
    """The footnote of a table with marked rows (none when every run is from a clean tree)."""
    runs = {r["run_id"]: r for r in records}
    dirty = sum(is_dirty(r) for r in runs.values())
    if not dirty:
        return []
    return [
        f"{DIRTY_MARK} Made on a tree with uncommitted changes (`git_dirty`); to be rerun at a "
        f"clean commit: {dirty} of the {len(runs)} runs of this table.",
        "",
    ]


# --- the sections -------------------------------------------------------------------------

RETRIEVAL_COLUMNS = (
    Column("recall@1", "R@1"),
    Column("recall@2", "R@2"),
    Column("recall@4", "R@4"),
    Column("recall@8", "R@8"),
    Column("map@r", "MAP@R"),
    Column("r_precision", "R-Prec."),
    Column("nmi", "NMI"),
)
_COST_COLUMNS = (
    Column("images_per_s", "train images/s", percent=False, higher_is_better=None, digits=0),
    Column("train_epoch_s", "train s/epoch", percent=False, higher_is_better=None, digits=2),
    Column("refresh_epoch_s", "refresh s/epoch", percent=False, higher_is_better=None, digits=2),
    Column("epoch_s", "s/epoch", percent=False, higher_is_better=None, digits=2),
    Column("wall_s", "run s (with eval)", percent=False, higher_is_better=None, digits=1),
)


def _settings_of(
    cells: dict[tuple[str, str, str], list[dict[str, Any]]], experiment: str
) -> list[str]:
    return sorted({s for (e, s, _) in cells if e == experiment}, key=setting_order)


def _methods_of(
    cells: dict[tuple[str, str, str], list[dict[str, Any]]], experiment: str
) -> list[str]:
    return sorted({m for (e, _, m) in cells if e == experiment}, key=method_order)


def _records_of(
    cells: dict[tuple[str, str, str], list[dict[str, Any]]],
    experiment: str,
    setting: str | None = None,
) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for (e, s, _), records in cells.items():
        if e == experiment and (setting is None or s == setting):
            seen.update((r["run_id"], r) for r in records)
    return list(seen.values())


def classification_section(cells: dict[tuple[str, str, str], list[dict[str, Any]]]) -> list[str]:
    settings = _settings_of(cells, "classification")
    if not settings:
        return []
    methods = _methods_of(cells, "classification")
    out = [
        f"## {_EXPERIMENT_TITLES['classification']}",
        "",
        f"Shared settings: {shared_settings(_records_of(cells, 'classification'))}.",
        "",
    ]
    tables = (
        (
            "classifier_accuracy",
            "Test accuracy (%) of each loss's own classifier (softmax: its linear layer; vMF: the mean directions; ArcFace/CosFace: their class weights)",
            True,
        ),
        (
            "accuracy",
            "Nearest class-mean accuracy (%): each class's mean direction over the training embeddings, the same rule for every loss",
            True,
        ),
        (
            "ece",
            "Expected calibration error (%) of the classifier's probabilities (lower is better)",
            False,
        ),
    )
    for key, title, higher in tables:
        columns = [Column(key, s, higher_is_better=higher) for s in settings]
        rows = [
            (
                marked(m, (r for s in settings for r in cells.get(("classification", s, m), []))),
                [cell_stat(cells.get(("classification", s, m), []), key) for s in settings],
            )
            for m in methods
        ]
        if all(stat is None for _, stats in rows for stat in stats):
            continue
        out += [f"**{title}.**", "", markdown_table(["method", *settings], rows, columns), ""]
        out += dirty_note(_records_of(cells, "classification"))
    return out


def retrieval_section(cells: dict[tuple[str, str, str], list[dict[str, Any]]]) -> list[str]:
    backbones = _settings_of(cells, "retrieval")
    if not backbones:
        return []
    out = [f"## {_EXPERIMENT_TITLES['retrieval']}", ""]
    for backbone in backbones:
        records = _records_of(cells, "retrieval", backbone)
        present = [
            c for c in RETRIEVAL_COLUMNS if any(metric(r, c.key) is not None for r in records)
        ]
        # A backbone's rows are the methods it ran (EfficientNet-Lite0 may run a chosen few).
        methods = [
            m for m in _methods_of(cells, "retrieval") if ("retrieval", backbone, m) in cells
        ]
        rows = [
            (m, [cell_stat(cells.get(("retrieval", backbone, m), []), c.key) for c in present])
            for m in methods
        ]
        validated = [
            c for c in VALIDATION_COLUMNS if any(metric(r, c.key) is not None for r in records)
        ]
        rows = [
            (
                marked(m, cells.get(("retrieval", backbone, m), [])),
                [
                    *stats,
                    *(
                        cell_stat(cells.get(("retrieval", backbone, m), []), c.key)
                        for c in validated
                    ),
                ],
            )
            for m, stats in rows
        ]
        shown = [*present, *validated]
        out += [
            f"### Backbone: {backbone}",
            "",
            f"Shared settings: {shared_settings(records)}. Metrics in % on the test classes, unseen in training.",
            "",
            markdown_table(["method", *(c.title for c in shown)], rows, shown),
            "",
            *dirty_note(records),
        ]
        if validated:
            out += [_rising_note(cells, backbone), ""]
    return out


# Figures of the test classes, shown in an ablation read on validation for the chosen point only.
_TEST_KEYS = ("recall@1", "map@r", "nmi")
VALIDATION_COLUMNS = (
    Column("val_recall@1", "val R@1"),
    Column("kept_epoch", "kept epoch", percent=False, higher_is_better=None),
    Column("val_tail_change", "val R@1, last 3 − 3 before", higher_is_better=None),
)


def _rising_note(cells: dict[tuple[str, str, str], list[dict[str, Any]]], backbone: str) -> str:
    """Which methods' validation Recall@1 was best at the last epoch (maybe still rising)."""
    rising = []
    for method in _methods_of(cells, "retrieval"):
        found = [metric(r, "best_is_last") for r in cells.get(("retrieval", backbone, method), [])]
        flags = [f for f in found if f is not None]
        if any(flags):
            rising.append(f"{method} ({int(sum(flags))}/{len(flags)} seeds)")
    head = (
        "Validation columns: Recall@1 of the held-out training classes at the epoch kept (the "
        "best validation Recall@1; that epoch's network is the one tested), that epoch, and the "
        "mean validation Recall@1 of the last 3 epochs minus that of the 3 before (points; about "
        "0 where the curve has flattened). "
    )
    if not rising:
        return head + "No run had its best validation Recall@1 at its last epoch."
    return head + (
        "Best validation Recall@1 at the last epoch, so the curve may still have been rising "
        f"when the budget ended: {', '.join(rising)}."
    )


def tuning_section(cells: dict[tuple[str, str, str], list[dict[str, Any]]]) -> list[str]:
    """The tuning runs: validation Recall@1 of each panel method at each candidate value, the
    candidates of one backbone and key side by side, and what each chose."""
    groups: dict[str, list[str]] = {}
    for setting in _settings_of(cells, "tuning"):
        groups.setdefault(setting.rsplit("=", 1)[0], []).append(setting)
    if not groups:
        return []
    settings = [s for candidates in groups.values() for s in candidates]
    methods = _methods_of(cells, "tuning")
    columns = [Column("val_recall@1", s, higher_is_better=None) for s in settings]
    rows = [
        (
            marked(m, (r for s in settings for r in cells.get(("tuning", s, m), []))),
            [cell_stat(cells.get(("tuning", s, m), []), "val_recall@1") for s in settings],
        )
        for m in methods
    ]
    means = {
        s: summarize([st.mean for _, stats in rows if (st := stats[j]) is not None])
        for j, s in enumerate(settings)
    }
    mean_row = (
        "mean of the panel (chooses)",
        [None if (m := means[s]) is None else Stat(m.mean, 0.0, 1) for s in settings],
    )
    planned = _planned_candidates([r for records in cells.values() for r in records])
    chosen = []
    for group, candidates in groups.items():
        complete = set(planned.get(group, candidates)) <= set(candidates) and all(
            cells.get(("tuning", s, m)) for s in candidates for m in methods
        )
        chosen.append(
            _chosen_line(candidates, [means[s] for s in candidates])
            if complete
            else f"{group}: not chosen yet, a tuning run is missing (the benchmark chooses once "
            "all have run)."
        )
    return [
        "## Settings chosen on validation",
        "",
        "Validation Recall@1 (%) of the held-out training classes, at each run's kept epoch, "
        "seed 0; the candidate with the best panel mean is used for the table. The test classes "
        "play no part in the choice.",
        "",
        markdown_table(["method", *settings], [*rows, mean_row], columns),
        "",
        *dirty_note(_records_of(cells, "tuning")),
        *(line + "\n" for line in chosen),
    ]


def _planned_candidates(records: Iterable[dict[str, Any]]) -> dict[str, list[str]]:
    """The tuning candidates ("efficientnet_lite0 lr=0.001") of each backbone and key
    ("efficientnet_lite0 lr") in the profiles the records ran under."""
    planned: dict[str, list[str]] = {}
    for name in {r.get("profile") for r in records}:
        profile = PROFILES.get(str(name))
        for backbone in profile.backbones if profile else ():
            for key, values in backbone.tune.items():
                group = f"{backbone.name} {key}"
                planned[group] = [f"{group}={value_label(v)}" for v in values]
    return planned


def _chosen_line(candidates: Sequence[str], means: Sequence[Stat | None]) -> str:
    """The candidate a tuned backbone and key takes: the best panel mean (the first on a tie)."""
    best = max((m.mean, -i, s) for i, (s, m) in enumerate(zip(candidates, means, strict=True)) if m)
    return f"Chosen: {best[2]} (panel mean {100 * best[0]:.1f})."


def ablation_section(cells: dict[tuple[str, str, str], list[dict[str, Any]]]) -> list[str]:
    out: list[str] = []
    for name in ABLATIONS:
        values = _settings_of(cells, name)
        if not values:
            continue
        records = _records_of(cells, name)
        columns = [
            Column("recall@1", "R@1"),
            Column("map@r", "MAP@R"),
            Column("nmi", "NMI"),
            Column("epoch_s", "s/epoch", percent=False, higher_is_better=None, digits=2),
            Column(
                "refresh_epoch_s", "refresh s/epoch", percent=False, higher_is_better=None, digits=2
            ),
        ]
        rows = []
        merged_of = {
            value: [r for (e, s, _), rs in cells.items() if e == name and s == value for r in rs]
            for value in values
        }
        validated = any(metric(r, "val_recall@1") is not None for r in records)
        chosen = None
        if validated:
            # Read on validation: the point with the best validation Recall@1 is chosen, and
            # only its test figures are shown.
            columns = [
                Column("val_recall@1", "val R@1"),
                Column("val_map@r", "val MAP@R"),
                *columns,
            ]
            scores = {v: cell_stat(rs, "val_recall@1") for v, rs in merged_of.items()}
            chosen = max((v for v in values if scores[v] is not None), key=lambda v: scores[v].mean)  # type: ignore[union-attr]
        for value, merged in merged_of.items():
            stats = [cell_stat(merged, c.key) for c in columns]
            if chosen is not None and value != chosen:
                stats = [
                    None if c.key in _TEST_KEYS else st
                    for st, c in zip(stats, columns, strict=True)
                ]
            label = f"**{value}** (chosen)" if value == chosen else value
            rows.append((marked(label, merged), stats))
        methods = ", ".join(_methods_of(cells, name))
        how = (
            " Read on validation (the held-out training classes): test figures only for the point chosen."
            if validated
            else " Read on the test classes (no validation split in these runs)."
        )
        out += [
            f"## {_EXPERIMENT_TITLES[name]}",
            "",
            f"Method: {methods}. Shared settings: {shared_settings(records)}.{how}",
            "",
            markdown_table([name, *(c.title for c in columns)], rows, columns),
            "",
            *dirty_note(records),
        ]
    return out


def cost_section(cells: dict[tuple[str, str, str], list[dict[str, Any]]]) -> list[str]:
    out: list[str] = []
    for experiment in ("classification", "retrieval"):
        for setting in _settings_of(cells, experiment):
            records = _records_of(cells, experiment, setting)
            rows = [
                (
                    marked(m, cells.get((experiment, setting, m), [])),
                    [
                        cell_stat(cells.get((experiment, setting, m), []), c.key)
                        for c in _COST_COLUMNS
                    ],
                )
                for m in _methods_of(cells, experiment)
                if (experiment, setting, m) in cells  # the methods this setting ran
            ]
            peers = sorted({r.get("concurrent_runs", 1) for r in records})
            machines = sorted(
                {
                    r.get("machine", {}).get("accelerator") or r.get("machine", {}).get("cpu", "?")
                    for r in records
                }
            )
            out += [
                f"### Cost: {experiment}, {setting}",
                "",
                f"Measured in the runs above, on {', '.join(machines)}; runs in flight at once: {', '.join(map(str, peers))}.",
                "",
                markdown_table(["method", *(c.title for c in _COST_COLUMNS)], rows, _COST_COLUMNS),
                "",
                *dirty_note(records),
            ]
    extra = global_vs_accumulate(cells)
    if extra:
        out += ["### Extra cost of global mean directions against accumulated ones", "", extra, ""]
    return ["## Cost", "", *out] if out else []


def global_vs_accumulate(cells: dict[tuple[str, str, str], list[dict[str, Any]]]) -> str:
    """Per table cell with both: seconds per epoch of each, the global refresh pass, and the ratio."""
    rows = []
    for experiment in ("classification", "retrieval"):
        for setting in _settings_of(cells, experiment):
            glob = cells.get((experiment, setting, "vmf-global"), [])
            acc = cells.get((experiment, setting, "vmf-accumulate"), [])
            g, a = cell_stat(glob, "epoch_s"), cell_stat(acc, "epoch_s")
            if g is None or a is None or a.mean <= 0:
                continue
            refresh = cell_stat(glob, "refresh_epoch_s")
            refresh_text = "–" if refresh is None else f"{refresh.mean:.2f}"
            rows.append(
                f"| {experiment} {setting} | {a.mean:.2f} | {g.mean:.2f} | {refresh_text} | {100 * (g.mean / a.mean - 1):+.0f}% |"
            )
    if not rows:
        return ""
    header = "| table | accumulate s/epoch | global s/epoch | global refresh s/epoch | extra time of global |\n|---|--:|--:|--:|--:|"
    return "\n".join([header, *rows])


def provenance(records: Sequence[dict[str, Any]]) -> list[str]:
    counts: dict[str, int] = defaultdict(int)
    for record in records:
        counts[record.get("status", "?")] += 1
    commits = sorted(
        {
            f"{r.get('git_commit', 'unknown')[:12]}{' (uncommitted changes)' if r.get('git_dirty') else ''}"
            for r in records
        }
    )
    machines = sorted({_machine_text(r.get("machine", {})) for r in records if r.get("machine")})
    profiles = sorted({str(r.get("profile")) for r in records})
    status = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    lines = [
        f"Profile(s): {', '.join(profiles)}. Runs: {status}.",
        f"Code: {', '.join(commits)}. Machine(s): {'; '.join(machines) or 'unknown'}.",
    ]
    failed = [r for r in records if r.get("status") != "ok"]
    for record in failed[:20]:
        cells = ", ".join(f"{e} {s}" for e, s in record["groups"])
        lines.append(
            f"- {record.get('status')}: {record['method']} seed {record['seed']} ({cells}): {str(record.get('error', ''))[:200]}"
        )
    return lines


def _machine_text(machine: dict[str, Any]) -> str:
    device = machine.get("accelerator") or machine.get("device", "?")
    return f"{machine.get('host', '?')} ({machine.get('cpu_count', '?')} CPU cores, {device}, torch {machine.get('torch', '?')})"


# The paper's global estimator (started from the untrained network's class means) and the same
# estimator started from random directions.
_GLOBALS = {"vmf-global": "global", "vmf-global-random": "global, random start"}
# The metrics each experiment's claims are judged on.
_CLAIM_METRICS = {"classification": ("classifier_accuracy",), "retrieval": ("recall@1", "map@r")}
# (experiment, method A, method B, what "A beats B" tests)
_CLAIMS = tuple(
    claim
    for g, name in _GLOBALS.items()
    for claim in (
        ("classification", g, "softmax", f"claim 1: vMF ({name}) vs softmax CE"),
        ("classification", g, "vmf-learned", f"claim 2: {name} vs learned directions"),
        ("classification", "vmf-accumulate", g, f"accumulate vs {name} (no extra pass)"),
        ("retrieval", g, "softmax", f"claim 1: vMF ({name}) vs softmax CE"),
        ("retrieval", g, "vmf-learned", f"claim 2: {name} vs learned directions"),
        ("retrieval", g, "triplet", f"claim 3: vMF ({name}) vs triplet"),
        ("retrieval", g, "contrastive", f"claim 3: vMF ({name}) vs contrastive"),
        ("retrieval", g, "lifted_structure", f"claim 3: vMF ({name}) vs lifted structure"),
        ("retrieval", g, "npair", f"claim 3: vMF ({name}) vs N-pair"),
        ("retrieval", g, "multi_similarity", f"vMF ({name}) vs multi-similarity"),
        ("retrieval", g, "proxy_anchor", f"vMF ({name}) vs Proxy-Anchor"),
        ("retrieval", "vmf-accumulate", g, f"accumulate vs {name} (no extra pass)"),
    )
) + (
    (
        "retrieval",
        "vmf-class-kappa",
        "vmf-accumulate",
        "per-class concentrations vs one shared kappa (accumulate)",
    ),
)


def paired_difference(
    a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]], key: str
) -> tuple[Stat, int, str] | None:
    """Mean ± std over seeds of metric(a) - metric(b), paired by seed (the same data split,
    order and initial weights), how many seeds have a positive difference, and the verdict
    (`vmfml.bench.stats.verdict`: beats, trails or level)."""
    diffs = paired_differences(a, b, key)
    stat = summarize(diffs)
    return None if stat is None else (stat, sum(d > 0 for d in diffs), verdict(diffs))


def claims_section(cells: dict[tuple[str, str, str], list[dict[str, Any]]]) -> list[str]:
    """The paper's claims at a glance: paired differences A - B in percentage points, and the
    verdict the rule fixed in advance gives."""
    rows = []
    used: list[dict[str, Any]] = []
    for experiment, a, b, what in _CLAIMS:
        for key in _CLAIM_METRICS[experiment]:
            for setting in _settings_of(cells, experiment):
                runs_a = cells.get((experiment, setting, a), [])
                runs_b = cells.get((experiment, setting, b), [])
                pair = paired_difference(runs_a, runs_b, key)
                if pair is None:
                    continue
                stat, wins, word = pair
                spread = f" ± {100 * stat.std:.1f}" if stat.n > 1 else ""
                rows.append(
                    f"| {marked(what, [*runs_a, *runs_b])} | {experiment} {setting} | {key} | {100 * stat.mean:+.1f}{spread} | {wins}/{stat.n} | {word} |"
                )
                used += [*runs_a, *runs_b]
    if not rows:
        return []
    header = [
        "## The claims at a glance",
        "",
        "Difference A − B in percentage points, paired by seed (mean ± std), the seeds where A is "
        f"ahead, and the verdict. The rule, fixed before the tables were read: {VERDICT_RULE}.",
        "",
        "| comparison (A vs B) | table | metric | A − B | seeds A ahead | verdict |",
        "|---|---|---|--:|--:|---|",
    ]
    return [*header, *rows, "", *dirty_note(used)]


def render(records: Sequence[dict[str, Any]]) -> str:
    """The whole markdown report of a results file's records."""
    latest = latest_records(records)
    cells = by_cell(latest)
    sections: list[Callable[[dict[tuple[str, str, str], list[dict[str, Any]]]], list[str]]] = [
        claims_section,
        classification_section,
        tuning_section,
        retrieval_section,
        ablation_section,
        cost_section,
    ]
    lines = ["# vmfml benchmark results", "", *provenance(latest), ""]
    lines.append(
        "Each cell: mean ± sample standard deviation over seeds (n = seeds when fewer than the others); best mean in bold."
    )
    lines.append("")
    for section in sections:
        lines += section(cells)
    return "\n".join(lines).rstrip() + "\n"


def write_report(results_dir: str | Path) -> list[Path]:
    """Write results.md and the plots from results_dir/results.jsonl; returns the files written."""
    results_dir = Path(results_dir)
    records = latest_records(read_records(results_dir))
    report = results_dir / REPORT_FILE
    write_text_atomic(report, render(records))
    written = [report]
    cells = by_cell(records)
    for plot in (plot_accuracy_vs_depth, plot_recall_at_1, plot_ablations, plot_validation_curves):
        path = plot(cells, results_dir)
        if path is not None:
            written.append(path)
    return written
