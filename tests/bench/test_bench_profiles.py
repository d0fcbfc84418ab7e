"""The benchmark plan: what runs, in which order, and that the comparison is fair."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vmfml.bench.profiles import (
    ABLATIONS,
    CLASSIFICATION_METHODS,
    HASHED_KEYS,
    METHODS,
    PROFILES,
    RETRIEVAL_METHODS,
    Group,
    _run_id,
    canonical_settings,
    get_profile,
    parse_experiments,
    plan,
    run_id,
)
from vmfml.losses import list_losses
from vmfml.train.config import load_config

LOSS_KEYS = {"loss", "directions", "global_init", "class_kappa", "seed"}


def test_every_method_names_a_loss_the_trainer_builds() -> None:
    for method, settings in METHODS.items():
        assert settings["loss"] in list_losses(), method
        load_config(None, settings)  # directions and other keys are valid config values


def test_full_profile_holds_every_claim_run_with_three_seeds() -> None:
    full = get_profile("full")
    effnet = full.backbones[1]
    # EfficientNet-Lite0's table waits on its learning rate, chosen by the tuning panel.
    assert not any(
        ("retrieval", "efficientnet_lite0") in s.groups for s in plan(full, ["retrieval"])
    )
    tuning = [
        {
            "status": "ok",
            "method": m,
            "seed": 0,
            "groups": [["tuning", f"efficientnet_lite0 lr={lr:g}"]],
            "metrics": {"kept": {"epoch": 1, "val_score": 0.9 if lr == 1e-4 else 0.8}},
        }
        for m in effnet.tune_methods
        for lr in effnet.tune["lr"]
    ]
    specs = plan(full, records=tuning)
    assert all(
        s.settings["lr"] == 1e-4 for s in specs if ("retrieval", "efficientnet_lite0") in s.groups
    )
    cells: dict[Group, set[tuple[str, int]]] = defaultdict(set)
    for spec in specs:
        for group in spec.groups:
            cells[group].add((spec.method, spec.seed))
    for depth in (1, 2, 3, 4):
        expected = {(m, s) for m in CLASSIFICATION_METHODS for s in range(3)}
        assert cells[Group("classification", f"depth={depth}")] == expected
    for backbone in ("small_cnn", "efficientnet_lite0"):
        assert cells[Group("retrieval", backbone)] == {
            (m, s) for m in RETRIEVAL_METHODS for s in range(3)
        }
    assert {m for m in RETRIEVAL_METHODS} >= {
        "triplet",
        "contrastive",
        "lifted_structure",
        "npair",
        "proxy_anchor",
        "vmf-global",
    }
    # 8 methods x 4 depths x 3 seeds + 17 x 2 backbones x 3 + ablations x 3 seeds: 27 values
    # per seed, 8 of them runs already planned (the default point of each vmf-global table and
    # of kappa_random_init, and global_init's two values, which are the two global methods).
    # + the 8 tuning runs, of which the 4 at the chosen rate are also seed 0 of their method.
    assert len(specs) == 96 + 102 + (27 - 8) * 3 + 8 - 4
    assert len({s.run_id for s in specs}) == len(specs)


@pytest.mark.parametrize("name", list(PROFILES))
def test_methods_of_one_table_cell_differ_only_in_their_loss(name: str) -> None:
    """Same data, network, epochs, batch size, lr and seeds for every method of a cell."""
    by_group: dict[Group, list[dict[str, object]]] = defaultdict(list)
    for spec in plan(get_profile(name)):
        for group in spec.groups:
            if group.experiment in ("classification", "retrieval"):
                by_group[group].append(spec.settings)
    assert by_group
    for group, settings in by_group.items():
        shared = [{k: v for k, v in s.items() if k not in LOSS_KEYS} for s in settings]
        assert all(s == shared[0] for s in shared), group
        seeds_per_method: dict[str, set[object]] = defaultdict(set)
        for s in settings:
            method = f"{s['loss']}/{s.get('directions')}/{s.get('global_init')}"
            seeds_per_method[f"{method}/{s.get('class_kappa')}"].add(s["seed"])
        assert len({frozenset(v) for v in seeds_per_method.values()}) == 1, group


def test_order_is_claims_seed_by_seed_then_ablations() -> None:
    specs = plan(get_profile("full"))
    experiments = [spec.groups[0].experiment for spec in specs]
    first_ablation = next(
        i for i, e in enumerate(experiments) if e not in ("classification", "retrieval", "tuning")
    )
    assert all(e in ABLATIONS for e in experiments[first_ablation:])
    assert experiments.index("retrieval") > max(
        i for i, e in enumerate(experiments) if e == "classification"
    )
    for phase in ("classification", "retrieval/small_cnn", "retrieval/efficientnet_lite0"):
        seeds = [s.seed for s in specs[:first_ablation] if s.phase == phase]
        assert seeds == sorted(seeds), phase  # every method has seed 0 before any has seed 1


def test_ablation_defaults_reuse_the_retrieval_run() -> None:
    specs = plan(get_profile("full"), ["retrieval", "ablations"])
    shared = [s for s in specs if Group("kappa", "16") in s.groups and s.seed == 0]
    assert len(shared) == 1
    spec = shared[0]
    assert spec.method == "vmf-global" and spec.seed == 0
    assert set(spec.groups) == {
        Group("retrieval", "small_cnn"),
        Group("kappa", "16"),
        Group("embed_dim", "128"),
        Group("refresh_period", "epoch"),
        Group("global_init", "data"),
        Group("lr", "0.003"),
        Group("learn_kappa", "False"),
    }
    kappas = sorted(
        float(g.setting) for s in specs if s.seed == 0 for g in s.groups if g.experiment == "kappa"
    )
    assert kappas == [4.0, 8.0, 16.0, 32.0, 64.0, 128.0]
    alone = plan(get_profile("full"), ["ablations"])
    assert {s.method for s in alone if Group("global_init", "random") in s.groups} == {
        "vmf-global-random"  # named as in the retrieval table, though planned on its own
    }
    random_start = [
        s for s in specs if Group("kappa_random_init", "16") in s.groups and s.seed == 0
    ]
    assert [s.method for s in random_start] == ["vmf-global-random"]
    assert set(random_start[0].groups) == {
        Group("retrieval", "small_cnn"),
        Group("global_init", "random"),
        Group("kappa_random_init", "16"),
    }


def test_run_id_is_a_hash_of_the_settings_only() -> None:
    base = {"loss": "vmf", "epochs": 2, "seed": 0}
    assert run_id(base) == run_id({**base, "kappa": 16.0})  # the default, spelled out
    assert run_id(base) == run_id(
        {**base, "device": "cuda", "out_dir": "/elsewhere", "progress": False}
    )
    assert run_id(base) == run_id({**base, "kappa": "16"})  # parsed like the command line
    assert run_id(base) != run_id({**base, "seed": 1})
    assert run_id(base) != run_id({**base, "kappa": 8.0})
    assert len(run_id(base)) == 16


def test_seeds_option_and_bad_names() -> None:
    assert {s.seed for s in plan(get_profile("quick"), ["classification"], seeds=2)} == {0, 1}
    with pytest.raises(ValueError, match="valid profiles: quick, cpu, converged, full"):
        get_profile("huge")
    with pytest.raises(ValueError, match="valid experiments: classification, retrieval, ablations"):
        parse_experiments("classification,retreival")
    with pytest.raises(ValueError, match="seeds must be at least 1"):
        plan(get_profile("quick"), seeds=0)


def test_full_profile_on_a_cpu_warns_and_points_to_the_cpu_profile() -> None:
    from vmfml.bench.commands import size_warning

    warning = size_warning("full", "cpu")
    assert warning is not None and "--profile cpu" in warning
    assert size_warning("cpu", "cpu") is None and size_warning("quick", "cpu") is None


def test_the_converged_frozen_bn_backbone_differs_from_the_first_only_in_its_batchnorm() -> None:
    _, trained_bn, frozen_bn = get_profile("converged").backbones
    assert dict(frozen_bn.settings) == {**trained_bn.settings, "freeze_bn": True}
    assert trained_bn.settings["freeze_bn"] is False
    assert (frozen_bn.methods, frozen_bn.tune, frozen_bn.tune_methods, frozen_bn.top) == (
        trained_bn.methods,
        trained_bn.tune,
        trained_bn.tune_methods,
        trained_bn.top,
    )


# The committed records whose stored id their settings still give (measured when HASHED_KEYS
# was frozen: the converged profile's runs made after keep_start and freeze_bn existed).
_IDS_HOLDING = 44


def _committed_records() -> list[dict[str, Any]]:
    from vmfml.bench.runner import read_records

    results = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
    return [
        r for path in sorted(results.glob("*/results.jsonl")) for r in read_records(path.parent)
    ]


def test_committed_records_keep_their_ids() -> None:
    from vmfml.bench.runner import current_id

    records = _committed_records()
    assert len(records) >= 491
    holding = [r for r in records if current_id(r) == r["run_id"]]
    assert len(holding) >= _IDS_HOLDING
    # The frozen key set is the one those records were hashed with; records made since hold the
    # keys added later too (their ids hash those only where set away from the default).
    frozen = [r for r in holding if set(r["settings"]) == HASHED_KEYS]
    assert len(frozen) >= _IDS_HOLDING
    assert all(set(r["settings"]) > HASHED_KEYS for r in holding if r not in frozen)
    assert set(canonical_settings({})) >= HASHED_KEYS


def _add_a_new_config_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """TrainConfig gains one more option, `future_option` (default "none"), as a new feature adds one."""
    from vmfml.train import config as config_module

    @dataclasses.dataclass
    class WithNewKey(config_module.TrainConfig):
        future_option: str = "none"

    monkeypatch.setattr(config_module, "TrainConfig", WithNewKey)
    config_module._field_types.cache_clear()
    _run_id.cache_clear()
    assert canonical_settings({})["future_option"] == "none"  # the new key is really there


@pytest.fixture(autouse=True)
def _fresh_id_caches() -> Iterator[None]:
    from vmfml.train import config as config_module

    yield
    config_module._field_types.cache_clear()
    _run_id.cache_clear()


def test_a_new_config_key_at_its_default_leaves_every_id_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vmfml.bench.runner import current_id

    specs = [s for name in PROFILES for s in plan(get_profile(name))]
    records = _committed_records()
    before = [current_id(r) for r in records]
    _add_a_new_config_key(monkeypatch)
    assert [current_id(r) for r in records] == before
    assert [s.run_id for name in PROFILES for s in plan(get_profile(name))] == [
        s.run_id for s in specs
    ]
    for spec in specs[:10]:
        assert run_id({**spec.settings, "future_option": "none"}) == spec.run_id  # spelled out
        assert run_id({**spec.settings, "future_option": "other"}) != spec.run_id
    # A record made after the key existed stores it; its id is the one made without it.
    record = {"run_id": specs[0].run_id, "settings": canonical_settings(specs[0].settings)}
    assert "future_option" in record["settings"] and current_id(record) == specs[0].run_id
