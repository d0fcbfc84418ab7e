"""What the benchmark runs: the compared methods, the budgets of each profile, and the run plan.

Three experiments test the paper's claims side by side with the best-known losses:

- `classification` (claims 1 and 2): Fashion-MNIST, the small CNN at depths 1 to 4; softmax
  cross-entropy, the vMF loss with global / accumulate / ema mean directions, the vMF loss with
  learned directions (= normalized softmax), ArcFace and CosFace. Test accuracy of each loss's
  own classifier.
- `retrieval` (claim 3): the combined 30-class set (Fashion-MNIST, Animal-MNIST, MNIST digits),
  trained on half of each source's classes and tested on the 15 unseen ones; a small CNN from
  scratch and EfficientNet-Lite0 with its ImageNet weights. Recall@K, MAP@R, NMI.
- `ablations`: the vMF loss with the paper's global directions on the retrieval small CNN,
  sweeping kappa, the embedding dimension, the refresh period, the first mean directions, the
  learning rate and a learned kappa; and kappa again for global directions started at random.

Fairness: every method within an experiment (and backbone, and depth) gets the same data,
network, epochs, batch size, optimizer, learning-rate schedule and seeds; only the loss differs.
The one per-loss difference is the one the authors ask for: a loss with its own parameters
declares their learning rate (`param_groups`, vmfml.losses.base): proxy-anchor's proxies at
100x the network's rate as in the authors' code, proxy-NCA's at 100x (our choice: its
re-implementations use other optimizers), class weights of normalized softmax, ArcFace and
CosFace at 1x as in their authors' code. Every other hyperparameter of a baseline is the
one its paper recommends (`vmfml.losses.baselines`). Timings come from the same runs as the
accuracies.

Each run is one `TrainConfig`; its id is a hash of its settings (runtime-only keys excluded), so
an interrupted benchmark resumes where it stopped and a run shared by two experiments (the
ablation's default kappa is the retrieval run) is trained once. The hash covers the config keys
of `HASHED_KEYS` (those the committed records were made with) and any newer key only where its
value differs from its default, so that a new option leaves every existing id, and every
finished run, as it was.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

# RUNTIME_KEYS are left out of a run's id, so the same run on another device or folder is
# recognised as done.
from vmfml.bench.selection import top_methods, tuned_settings, value_label
from vmfml.train.config import RUNTIME_KEYS, load_config

# method name -> the config keys that select its loss.
METHODS: dict[str, dict[str, Any]] = {
    "softmax": {"loss": "softmax"},
    "vmf-global": {"loss": "vmf", "directions": "global"},
    # The same full-pass estimator, but the first epoch trains towards random directions instead
    # of the class means of the untrained network (which lie close together).
    "vmf-global-random": {"loss": "vmf", "directions": "global", "global_init": "random"},
    "vmf-accumulate": {"loss": "vmf", "directions": "accumulate"},
    "vmf-ema": {"loss": "vmf", "directions": "ema"},
    "vmf-learned": {"loss": "vmf", "directions": "learned"},
    # The directional statistics no peer uses: each class its own concentration, estimated from
    # its mean resultant length at every refresh, in the exact mixture posterior; the shrinkage
    # towards the shared kappa (0.5) was fixed in advance, not tuned.
    "vmf-class-kappa": {"loss": "vmf", "directions": "accumulate", "class_kappa": 0.5},
    # Issue 24's candidates, in no profile's tables yet (`vmfml bench --methods` runs them), each
    # with its setting fixed in advance. An additive angular margin on the true class's mean
    # direction, ArcFace's m = 0.5 rad (also Sub-center ArcFace's), on `accumulate`: the best
    # vMF estimator of 5.8 that needs no extra pass.
    "vmf-margin": {"loss": "vmf", "directions": "accumulate", "vmf_margin": 0.5},
    # K = 3 sub-centres per class (Sub-center ArcFace's K), from k-means over global's full pass,
    # started at random (the paper's data start trails by 5.5 points of R@1 in 5.8).
    "vmf-subcentre": {
        "loss": "vmf",
        "directions": "global",
        "global_init": "random",
        "vmf_subcentres": 3,
    },
    # Proxy-Anchor's hard weighting (scale 32, margin 0.1, its authors') with `accumulate`'s
    # mean directions as the anchors: Proxy-Anchor leads 5.8's small-CNN table, and this asks
    # whether its weighting or its learned proxies do it.
    "vmf-anchor": {"loss": "vmf", "directions": "accumulate", "vmf_weighting": "proxy-anchor"},
    # CIDER (Ming et al., ICLR 2023; vmfml.losses.cider): compactness to EMA prototypes plus
    # dispersion between them, at its authors' tau 0.1 and prototype momentum 0.5.
    "cider": {"loss": "cider"},
    "normalized_softmax": {"loss": "normalized_softmax"},
    "arcface": {"loss": "arcface"},
    "cosface": {"loss": "cosface"},
    "triplet": {"loss": "triplet"},
    "contrastive": {"loss": "contrastive"},
    "lifted_structure": {"loss": "lifted_structure"},
    "npair": {"loss": "npair"},
    "multi_similarity": {"loss": "multi_similarity"},
    "proxy_nca": {"loss": "proxy_nca"},
    "proxy_anchor": {"loss": "proxy_anchor"},
}
VMF_METHODS = ("vmf-global", "vmf-global-random", "vmf-accumulate", "vmf-ema", "vmf-learned")
CLASSIFICATION_METHODS = ("softmax", *VMF_METHODS, "arcface", "cosface")
RETRIEVAL_METHODS = (
    *VMF_METHODS,
    "vmf-class-kappa",
    "softmax",
    "triplet",
    "contrastive",
    "lifted_structure",
    "npair",
    "multi_similarity",
    "proxy_nca",
    "proxy_anchor",
    "normalized_softmax",
    "arcface",
    "cosface",
)
EXPERIMENTS = ("classification", "retrieval", "ablations")


@dataclass(frozen=True)
class Ablation:
    """One ablation table: `method` on the retrieval small CNN with config `key` swept."""

    title: str
    method: str
    key: str


# The ablation tables, by experiment name in the results; their values are in each Profile.
ABLATIONS: dict[str, Ablation] = {
    "kappa": Ablation("Ablation: concentration kappa (vMF global)", "vmf-global", "kappa"),
    "embed_dim": Ablation("Ablation: embedding dimension (vMF global)", "vmf-global", "embed_dim"),
    "refresh_period": Ablation(
        "Ablation: refresh period of the global mean directions", "vmf-global", "refresh_period"
    ),
    "global_init": Ablation(
        "Ablation: first mean directions of global (the untrained network's class means or random)",
        "vmf-global",
        "global_init",
    ),
    "lr": Ablation("Ablation: peak learning rate (vMF global)", "vmf-global", "lr"),
    "learn_kappa": Ablation(
        "Ablation: kappa fixed or learned (vMF global)", "vmf-global", "learn_kappa"
    ),
    "class_kappa": Ablation(
        "Ablation: shrinkage of the per-class concentrations towards kappa (vMF accumulate, "
        "0 = one shared kappa)",
        "vmf-class-kappa",
        "class_kappa",
    ),
    "kappa_random_init": Ablation(
        "Ablation: concentration kappa (vMF global started from random directions)",
        "vmf-global-random",
        "kappa",
    ),
}


class Group(NamedTuple):
    """One cell of a results table a run belongs to: the experiment and its column ("depth=2")."""

    experiment: str
    setting: str


@dataclass(frozen=True)
class Backbone:
    """A network of the retrieval experiment and its training budget (config overrides).

    Settings can be chosen on validation rather than fixed: `tune` maps a config key to its
    candidate values, each run once (seed 0) by the `tune_methods` panel; the value whose runs
    have the best mean validation Recall@1 is used for the table. `methods` (default: the
    profile's) can be extended by the `top` best other methods of the backbone `top_from`,
    ranked by validation Recall@1 too. Runs that wait on such a choice are planned once the
    runs it reads are finished (`vmfml.bench.selection`).
    """

    name: str
    settings: Mapping[str, Any]
    methods: tuple[str, ...] | None = None
    tune: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    tune_methods: tuple[str, ...] = ()
    top_from: str | None = None
    top: int = 0


@dataclass(frozen=True)
class Profile:
    """The budgets of one benchmark size. `*_settings` are TrainConfig overrides."""

    name: str
    description: str
    seeds: int
    classification_methods: tuple[str, ...]
    depths: tuple[int, ...]
    classification_settings: Mapping[str, Any]
    retrieval_methods: tuple[str, ...]
    backbones: tuple[Backbone, ...]
    ablations: Mapping[str, tuple[Any, ...]]  # ABLATIONS name -> the swept values
    ablation_seeds: int = 1


@dataclass
class RunSpec:
    """One training run of the plan.

    `settings` are the TrainConfig overrides that define the run (seed included); `groups` the
    table cells it fills; `phase` names its workload (runs of one phase run side by side, so
    that their timings are measured under the same conditions); `cost_key` groups runs that take
    about the same time (for the time budget).
    """

    method: str
    seed: int
    settings: dict[str, Any]
    groups: list[Group]
    phase: str
    cost_key: str
    run_id: str = field(init=False)

    def __post_init__(self) -> None:
        self.run_id = run_id(self.settings)


# The config keys a run's id hashes whatever their value: every non-runtime key of TrainConfig
# when the committed records (benchmarks/results) were made. Frozen: a key added to the config
# since enters the hash only where a run sets it to something other than its default
# (`hashed_settings`), so new options do not change the ids of the runs already done. Never add
# to this list (it would change every id); a new key needs nothing here.
HASHED_KEYS = frozenset(
    {
        "augment",
        "batch_size",
        "class_kappa",
        "data",
        "depth",
        "directions",
        "ema_momentum",
        "embed_dim",
        "epochs",
        "eval_ks",
        "freeze_bn",
        "global_init",
        "image_size",
        "kappa",
        "keep_start",
        "learn_kappa",
        "loss",
        "lr",
        "max_minutes",
        "model",
        "on_bad_image",
        "optimizer",
        "patience",
        "precision",
        "pretrained",
        "refresh_period",
        "seed",
        "split",
        "split_seed",
        "test_fraction",
        "train_subset",
        "val_fraction",
        "warmup_epochs",
        "weight_decay",
        "weights",
        "width",
    }
)


def canonical_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The full config of a run (defaults filled in, values parsed), runtime keys left out.

    Raises ValueError for an unknown key or a bad value, naming it.
    """
    full = load_config(None, dict(settings)).to_dict()
    return {k: v for k, v in sorted(full.items()) if k not in RUNTIME_KEYS}


def hashed_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """What a run's id hashes: its canonical settings, less every key outside `HASHED_KEYS` whose
    value is the one the key takes when the run does not set it (its default, which may depend
    on the other settings)."""
    canonical = canonical_settings(settings)
    newer = [k for k in canonical if k not in HASHED_KEYS]
    if not newer:
        return canonical
    given = dict(settings)
    unset = canonical_settings({k: v for k, v in given.items() if k not in newer})
    return {k: v for k, v in canonical.items() if k in HASHED_KEYS or v != unset.get(k)}


def run_id(settings: Mapping[str, Any]) -> str:
    """A 16-hex-digit hash of a run's `hashed_settings`: equal settings, equal id."""
    return _run_id(json.dumps(dict(settings), sort_keys=True, default=list))


@functools.lru_cache(maxsize=4096)
def _run_id(settings_json: str) -> str:
    # Cached: parsing a config is slow next to planning, and plans repeat the same settings.
    hashed = hashed_settings(json.loads(settings_json))
    text = json.dumps(hashed, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_CLASSIFICATION_DATA = {
    "data": "fashion-mnist",
    "split": "standard",
    "model": "small_cnn",
    "augment": "flip_crop",
}
_RETRIEVAL_DATA = {"data": "combined-30", "split": "class-disjoint"}
# Every run evaluates once, at the end: per-epoch test passes would only add cost.
# Settings pinned here rather than taken from `vmfml train`'s defaults, so that the tables stay
# reproducible when those defaults change.
# No validation split: the benchmark's runs train on all their training images (issue 13 will
# choose hyperparameters on held-out classes instead).
_COMMON = {"eval_ks": (1, 2, 4, 8), "eval_every": 0, "batch_size": 128, "val_fraction": 0.0}
# The validation protocol of the converged profile: 2 of each source's 5 training classes are
# held out (6 classes, 5,807 images) and validated after every epoch; the network trains on the
# other 9. The class split is the same for every seed (split_seed 0), so the seeds' spread is
# that of the initial weights and the data order alone. Every epoch is run (patience 0) for the
# curves, and the epoch with the best validation Recall@1 is the one tested.
_VALIDATED = {"val_fraction": 0.4, "split_seed": 0, "patience": 0, "eval_every": 1}
# One method of each family: the panel whose mean validation Recall@1 chooses a tuned setting.
_TUNE_PANEL = ("softmax", "vmf-accumulate", "multi_similarity", "proxy_anchor")
_SMALL_CNN_RETRIEVAL = {"model": "small_cnn", "depth": 3, "width": 1.0, "augment": "none"}
# Fine-tuning an ImageNet network: the peak learning rate of the DML fine-tuning literature
# (Proxy-Anchor: AdamW 1e-4), not that of training from scratch. The input size, 64 px, was
# first read on test images; redone on the converged profile's 6 validation classes before any
# training (`benchmarks/efficientnet_input_size.py`): Recall@1 17.8 at 32 px, 95.4 at 48, 97.2
# at 64 and 97.6 at 96 px, which costs 2.7x the inference time of 64 px, so 64 px stays.
_EFFICIENTNET = {
    "model": "efficientnet_lite0",
    "pretrained": True,
    "image_size": 64,
    "augment": "none",
    "lr": 1e-4,
    # Tested after training even where validation prefers the untrained network: the tables
    # compare what each loss's training makes of it.
    "keep_start": False,
    # The tables of 5.3 and 5.8 trained BatchNorm with the rest; the converged profile's
    # frozen-BN backbone freezes it.
    "freeze_bn": False,
}
# The ablation values shared by the cpu and full profiles (the refresh periods depend on the
# number of iterations per epoch, so each profile sets its own). Each sweep holds the default.
_SWEEPS: dict[str, tuple[Any, ...]] = {
    "kappa": (4.0, 8.0, 16.0, 32.0, 64.0, 128.0),
    "embed_dim": (16, 32, 64, 128, 256),
    "global_init": ("data", "random"),
    "lr": (1e-3, 3e-3, 1e-2),
    "learn_kappa": (False, True),
    "kappa_random_init": (4.0, 8.0, 16.0, 32.0, 64.0, 128.0),
}

PROFILES: dict[str, Profile] = {
    "quick": Profile(
        name="quick",
        description="CI smoke test: tiny subsets, 1 epoch, 1 seed, a few methods (a few minutes on 2 CPU cores)",
        seeds=1,
        classification_methods=("softmax", "vmf-global"),
        depths=(1, 2),
        classification_settings={
            "train_subset": 1000,
            "epochs": 1,
            "width": 0.5,
            "batch_size": 100,
        },
        retrieval_methods=("vmf-global", "vmf-accumulate", "triplet"),
        backbones=(
            Backbone(
                "small_cnn",
                {
                    **_SMALL_CNN_RETRIEVAL,
                    "depth": 2,
                    "width": 0.5,
                    "train_subset": 1000,
                    "epochs": 1,
                    "batch_size": 100,
                },
            ),
        ),
        # The defaults (kappa 16, dimension 128, refresh every epoch) are the retrieval run itself.
        ablations={"kappa": (8.0, 16.0), "embed_dim": (128,), "refresh_period": ("epoch", "3")},
    ),
    "cpu": Profile(
        name="cpu",
        description="reduced budgets for a 2-core CPU (about 2.3 hours measured: classification 21 min, retrieval 95 min, ablations 20 min)",
        seeds=3,
        classification_methods=CLASSIFICATION_METHODS,
        depths=(1, 2, 3, 4),
        classification_settings={"train_subset": 4000, "epochs": 2, "width": 1.0},
        retrieval_methods=RETRIEVAL_METHODS,
        backbones=(
            Backbone(
                "small_cnn",
                {**_SMALL_CNN_RETRIEVAL, "width": 1.0, "train_subset": 4000, "epochs": 2},
            ),
            # One epoch of 4,000 images is 31 steps: at the fine-tuning rate of 1e-4 the random
            # head hardly trains (R@1 77.8 for vMF accumulate, seed 0, against 82.8 at 1e-3).
            # About 1.5 min per run on 2 cores: 42 s training, 35 s embedding the 15,234 images.
            Backbone(
                "efficientnet_lite0",
                {**_EFFICIENTNET, "train_subset": 4000, "epochs": 1, "lr": 1e-3},
            ),
        ),
        # 4,000 training images / 128 = 31 iterations per epoch: every epoch, ~4 and ~2 per epoch.
        ablations={**_SWEEPS, "refresh_period": ("epoch", "8", "16")},
        ablation_seeds=3,
    ),
    # Measured on the 2-core CPU machine with nothing else running: a small-CNN run of 15 epochs
    # (9,000 training images, validation after each) takes 1-1.5 minutes (lifted structure 16-18
    # in pytorch-metric-learning's form, 17x softmax's step; vmfml's is far cheaper, BENCHMARKS.md
    # 5.6), EfficientNet-Lite0 trains at about 276 images/s, so a run
    # of 6 epochs takes about 5 minutes; the small-CNN table (51 runs) took 1 h 55 min, the 8
    # tuning runs and 36 EfficientNet runs with trained BatchNorm 3.7 hours, the frozen-BN table
    # (40 runs, 4 of its 8 tuning runs being table runs) 3.35 hours: about 9 hours in all,
    # resumable across sessions.
    "converged": Profile(
        name="converged",
        description="retrieval trained until validation Recall@1 flattens, settings chosen on held-out training classes (about 9 hours on a 2-core CPU, resumable)",
        seeds=3,
        classification_methods=(),
        depths=(),
        classification_settings={},
        retrieval_methods=RETRIEVAL_METHODS,
        backbones=(
            # The small CNN's settings are fixed in advance (those of the cpu profile); only
            # the epoch to test is chosen, on validation. 15 epochs: in a 30-epoch pilot (vMF
            # accumulate, seed 0) the training loss was below 0.01 by epoch 10 and validation
            # Recall@1 stayed within 0.929-0.956 from epoch 1 on.
            Backbone("small_cnn", {**_SMALL_CNN_RETRIEVAL, **_VALIDATED, "epochs": 15}),
            # EfficientNet-Lite0: the learning rate is chosen on validation between the
            # fine-tuning rate of the DML literature and ten times it; the paper's variants,
            # its softmax baseline (claim 1) and the five best other methods of the small-CNN
            # table (by validation Recall@1).
            # 6 epochs (420 steps), so that the last 3 validated epochs can be compared with
            # the 3 before.
            Backbone(
                "efficientnet_lite0",
                {**_EFFICIENTNET, **_VALIDATED, "epochs": 6},
                methods=("softmax", *VMF_METHODS, "vmf-class-kappa"),
                tune={"lr": (1e-4, 1e-3)},
                tune_methods=_TUNE_PANEL,
                top_from="small_cnn",
                top=5,
            ),
            # The same with the backbone's BatchNorm frozen, as the DML fine-tuning literature
            # does (Proxy-Anchor's `--bn-freeze 1`): the table above trained it, and re-estimated
            # statistics alone cost 15 points of validation Recall@1. Its own tuning.
            Backbone(
                "efficientnet_lite0_frozen_bn",
                {**_EFFICIENTNET, **_VALIDATED, "epochs": 6, "freeze_bn": True},
                methods=("softmax", *VMF_METHODS, "vmf-class-kappa"),
                tune={"lr": (1e-4, 1e-3)},
                tune_methods=_TUNE_PANEL,
                top_from="small_cnn",
                top=5,
            ),
        ),
        # Read on validation; only the chosen point's test figures are shown. class_kappa: the
        # per-class concentrations' shrinkage, 0.5 in the table (fixed in advance), here chosen
        # on validation among 0 (accumulate), 0.25, 0.5 and 1 (no shrinkage).
        ablations={
            "kappa": (4.0, 8.0, 16.0, 32.0, 64.0),
            "embed_dim": (32, 128, 256),
            "class_kappa": (0.0, 0.25, 0.5, 1.0),
        },
        ablation_seeds=1,
    ),
    # Sized for `benchmarks/run_gpu.sh`: ~470 s of runs on one H100 with 8 runs side by side
    # (estimates, not measurements: per training step ~3-4 ms for the small CNN, ~10 ms for
    # EfficientNet-Lite0 at 64 px; per run ~3-6 s of loading and evaluation, the retrieval metrics
    # on the CPU). Classification 84 runs x 4 epochs of 30,000 images ~ 140 s; retrieval small CNN
    # 51 runs x 8 epochs of 9,000 (+ validation of 5,800 images per epoch) ~ 60 s; EfficientNet 8
    # tuning runs, then 47 runs x 3 epochs ~ 90-130 s; ablations ~ 20 s. What does not fit the
    # time budget is left out from the end of the plan: ablations first, then the last seeds of
    # the EfficientNet table.
    "full": Profile(
        name="full",
        description="the real budgets, for one GPU (sized for about 8 minutes on an H100 with 8 runs side by side)",
        seeds=3,
        classification_methods=CLASSIFICATION_METHODS,
        depths=(1, 2, 3, 4),
        classification_settings={"train_subset": 30000, "epochs": 4, "width": 1.0},
        retrieval_methods=RETRIEVAL_METHODS,
        # The converged profile's validation protocol (its retrieval has never run on a GPU, so
        # no record is lost by adopting it): the epoch tested and EfficientNet-Lite0's learning
        # rate are chosen on the held-out training classes.
        backbones=(
            Backbone("small_cnn", {**_SMALL_CNN_RETRIEVAL, **_VALIDATED, "epochs": 8}),
            Backbone(
                "efficientnet_lite0",
                {**_EFFICIENTNET, **_VALIDATED, "epochs": 3},
                tune={"lr": (1e-4, 1e-3)},
                tune_methods=_TUNE_PANEL,
            ),
        ),
        # 9,000 training images / 128 = 70 iterations per epoch: about 2 refreshes per epoch, 1,
        # and one per ~4 epochs.
        ablations={**_SWEEPS, "refresh_period": ("30", "epoch", "300")},
        ablation_seeds=3,
    ),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid profiles: {', '.join(PROFILES)}")
    return PROFILES[name]


def parse_experiments(text: str | Sequence[str]) -> tuple[str, ...]:
    """ "classification,retrieval" -> ("classification", "retrieval"); unknown names refused."""
    return _parse_names(text, EXPERIMENTS, "experiment")


def parse_methods(text: str | Sequence[str]) -> tuple[str, ...]:
    """ "vmf-margin,vmf-subcentre" -> ("vmf-margin", "vmf-subcentre"); unknown names refused."""
    return _parse_names(text, METHODS, "method")


def parse_backbones(profile: Profile, text: str | Sequence[str]) -> tuple[str, ...]:
    """ "small_cnn" -> ("small_cnn",): names of `profile`'s backbones; unknown names refused."""
    return _parse_names(text, [b.name for b in profile.backbones], "backbone")


def _parse_names(text: str | Sequence[str], valid: Collection[str], what: str) -> tuple[str, ...]:
    """Comma-separated (or listed) names of `what`, each one of `valid`, in order, once each."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if not names:
        raise ValueError(f"no {what} given; valid {what}s: {', '.join(valid)}")
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(
            f"unknown {what}(s) {', '.join(unknown)}; valid {what}s: {', '.join(valid)}"
        )
    return tuple(dict.fromkeys(names))


def _spec(
    method: str, seed: int, base: Mapping[str, Any], group: Group, phase: str, cost_key: str
) -> RunSpec:
    settings = {**_COMMON, **base, **METHODS[method], "seed": seed}
    return RunSpec(method, seed, settings, [group], phase, cost_key)


def plan(
    profile: Profile,
    experiments: Iterable[str] = EXPERIMENTS,
    seeds: int | None = None,
    records: Sequence[Mapping[str, Any]] = (),
    methods: Sequence[str] | None = None,
    backbones: Sequence[str] | None = None,
) -> list[RunSpec]:
    """The runs of `profile`, most important first.

    Order: classification, then retrieval per backbone, then the ablations; within each, seed
    by seed (every method gets seed 0 before any gets seed 1), so a benchmark cut short still
    covers every method. Runs with equal settings are merged into one that fills all their
    table cells.

    Args:
        profile: the budgets.
        experiments: a subset of EXPERIMENTS.
        seeds: seeds per method for the claim experiments (default: the profile's); the
            ablations use min(seeds, profile.ablation_seeds).
        records: the finished runs (`vmfml.bench.runner.read_records`), from which settings
            and methods chosen on validation are read; runs that wait on a choice not yet
            made are left out.
        methods: METHODS names that replace the methods of the classification and retrieval
            tables (each backbone's, and the best methods another table adds), e.g. to run
            methods in no profile under a profile's budgets and protocol; the tuning runs and
            the ablations stay as they are.
        backbones: names of the profile's backbones whose retrieval runs to plan (default:
            all); the ablations stay as they are.
    """
    methods = None if methods is None else parse_methods(list(methods))
    chosen = set(parse_experiments(list(experiments)))
    seeds = profile.seeds if seeds is None else seeds
    if seeds < 1:
        raise ValueError(f"seeds must be at least 1; got {seeds}")
    specs: list[RunSpec] = []
    if "classification" in chosen:
        base = {**_CLASSIFICATION_DATA, **profile.classification_settings}
        for seed in range(seeds):
            for depth in profile.depths:
                for method in methods or profile.classification_methods:
                    group = Group("classification", f"depth={depth}")
                    specs.append(
                        _spec(
                            method,
                            seed,
                            {**base, "depth": depth},
                            group,
                            "classification",
                            f"classification/depth={depth}",
                        )
                    )
    if "retrieval" in chosen:
        names = None if backbones is None else parse_backbones(profile, list(backbones))
        for backbone in profile.backbones:
            if names is not None and backbone.name not in names:
                continue
            specs += _retrieval_specs(profile, backbone, seeds, records, methods)
    if "ablations" in chosen:
        specs += _ablation_specs(profile, min(seeds, profile.ablation_seeds))
    return merge_duplicates(specs)


def _retrieval_specs(
    profile: Profile,
    backbone: Backbone,
    seeds: int,
    records: Sequence[Mapping[str, Any]],
    chosen: Sequence[str] | None = None,
) -> list[RunSpec]:
    """The tuning runs of a backbone, then its table's runs once what they wait on is known."""
    phase = f"retrieval/{backbone.name}"
    base = {**_RETRIEVAL_DATA, **backbone.settings}
    specs = []
    for key, values in backbone.tune.items():
        for value in values:
            group = Group("tuning", f"{backbone.name} {key}={value_label(value)}")
            specs += [
                _spec(m, 0, {**base, key: value}, group, phase, phase)
                for m in backbone.tune_methods
            ]
    tuned = tuned_settings(backbone, records)
    if tuned is None:
        return specs
    methods = list(chosen or backbone.methods or profile.retrieval_methods)
    if backbone.top and not chosen:
        top = top_methods(backbone, profile, records, exclude=methods, seeds=seeds)
        methods += top or []
    for seed in range(seeds):
        for method in methods:
            group = Group("retrieval", backbone.name)
            specs.append(_spec(method, seed, {**base, **tuned}, group, phase, phase))
    return specs


def _ablation_specs(profile: Profile, seeds: int) -> list[RunSpec]:
    backbone = profile.backbones[0]
    base = {**_RETRIEVAL_DATA, **backbone.settings}
    phase = f"retrieval/{backbone.name}"
    specs = []
    for seed in range(seeds):
        for name, values in profile.ablations.items():
            ablation = ABLATIONS[name]
            for value in values:
                label = value_label(value)
                cost = phase if ablation.key != "refresh_period" else f"{phase}/refresh={value}"
                settings = {**base, **METHODS[ablation.method], ablation.key: value}
                specs.append(
                    _spec(method_of(settings), seed, settings, Group(name, label), phase, cost)
                )
    return specs


def method_of(settings: Mapping[str, Any]) -> str:
    """The most specific method whose loss keys the settings have (global_init "random" makes
    `vmf-global` `vmf-global-random`), so that a run is named alike in every table it fills."""
    matching = [
        m for m, keys in METHODS.items() if all(settings.get(k) == v for k, v in keys.items())
    ]
    return max(matching, key=lambda m: len(METHODS[m]))


def merge_duplicates(specs: Sequence[RunSpec]) -> list[RunSpec]:
    """Keep the first of runs with equal ids, giving it the table cells of all of them."""
    merged: dict[str, RunSpec] = {}
    for spec in specs:
        if spec.run_id in merged:
            first = merged[spec.run_id]
            first.groups.extend(g for g in spec.groups if g not in first.groups)
        else:
            merged[spec.run_id] = dataclasses.replace(
                spec, settings=dict(spec.settings), groups=list(spec.groups)
            )
    return list(merged.values())
