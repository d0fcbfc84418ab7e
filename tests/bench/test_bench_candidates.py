"""Issue 24's candidate vMF methods in the harness: named, fixed in advance, run by `--methods`
under a profile's protocol, without touching the id of any run the profiles already hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmfml.bench.profiles import METHODS, PROFILES, get_profile, plan
from vmfml.cli import main
from vmfml.losses import create_loss
from vmfml.train.config import load_config

CANDIDATES = ("vmf-margin", "vmf-subcentre", "vmf-anchor")


def test_the_candidates_build_their_loss_with_the_options_they_name() -> None:
    margin = load_config(None, METHODS["vmf-margin"])
    subcentre = load_config(None, METHODS["vmf-subcentre"])
    assert margin.loss_options() == {"directions": "accumulate", "angular_margin": 0.5}
    assert subcentre.loss_options() == {"directions": "global", "init": "random", "subcentres": 3}
    loss = create_loss(subcentre.loss, 9, 128, **subcentre.loss_options())
    assert (loss.subcentres, loss.angular_margin) == (3, 0.0)  # type: ignore[union-attr]


def test_no_profile_holds_them_so_no_plan_changes() -> None:
    for profile in PROFILES.values():
        assert not {s.method for s in plan(profile)} & set(CANDIDATES), profile.name


def test_methods_replace_the_tables_methods_under_the_profiles_protocol() -> None:
    profile = get_profile("converged")
    specs = plan(profile, ["retrieval"], methods=CANDIDATES)
    table = [s for s in specs if s.groups[0].experiment == "retrieval"]
    assert sorted((s.method, s.seed) for s in table) == sorted(
        (m, seed) for m in CANDIDATES for seed in range(3)
    )
    # The small CNN's budget and validation protocol, the method's own loss settings.
    usual = next(
        s for s in plan(profile, ["retrieval"]) if (s.method, s.seed) == ("vmf-accumulate", 0)
    )
    margin = next(s for s in table if (s.method, s.seed) == ("vmf-margin", 0))
    assert margin.settings == {**usual.settings, "vmf_margin": 0.5}
    assert margin.run_id != usual.run_id
    # Without records, EfficientNet-Lite0 has only its learning-rate tuning runs, as usual.
    assert {s.groups[0].experiment for s in specs} == {"retrieval", "tuning"}
    with pytest.raises(ValueError, match="unknown method.*vmf-margins; valid methods: softmax"):
        plan(profile, ["retrieval"], methods=["vmf-margins"])


def test_bench_dry_run_lists_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", "--profile", "quick", "--experiments", "retrieval", "--dry-run"]
    assert main([*args, "--methods", ",".join(CANDIDATES), "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert all(m in out for m in CANDIDATES) and "3 runs, 0 done" in out
    assert main([*args, "--methods", "vmf-margins", "--results", str(tmp_path)]) == 2
    assert "unknown method(s) vmf-margins; valid methods: " in capsys.readouterr().err


def test_backbones_limit_the_retrieval_runs_to_those_named() -> None:
    profile = get_profile("converged")
    specs = plan(profile, ["retrieval"], methods=CANDIDATES, backbones=["small_cnn"])
    assert {s.phase for s in specs} == {"retrieval/small_cnn"}
    assert len(specs) == 3 * len(CANDIDATES)
    everything = plan(profile, ["retrieval"], methods=CANDIDATES)
    assert [s.run_id for s in everything[: len(specs)]] == [s.run_id for s in specs]
    with pytest.raises(ValueError, match="unknown backbone.*resnet; valid backbones: small_cnn"):
        plan(profile, ["retrieval"], backbones=["resnet"])
