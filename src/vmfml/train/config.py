"""The training configuration: one dataclass, the single source of defaults.

Loaded from YAML (`--config run.yaml`) and overridden from the command line (`--kappa 8`); an
unknown key is refused with the valid keys listed, so a typo never silently falls back to a
default.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vmfml.configs import resolve_config
from vmfml.losses import canonical_loss, has_period
from vmfml.losses import loss_options as loss_option_names
from vmfml.losses.vmf import WEIGHTINGS
from vmfml.models.inference import PRECISIONS
from vmfml.train.length import AUTO_MAX_EPOCHS, AUTO_MIN_EPOCHS, AUTO_STEPS

# Config keys that change how a run is executed or reported but not its result: a resumed run may
# change them, and the benchmark leaves them out of a run's id.
RUNTIME_KEYS = frozenset(
    {"device", "num_workers", "threads", "progress", "plots", "out_dir", "eval_every", "data_root"}
    | {"log_to", "mlflow_uri"}
)
# Config keys that change the rest of a run and may still change on resume: to recover from a
# divergence ("lower --lr or --kappa, then resume"), or to go on after a time cap.
RESUME_KEYS = frozenset({"lr", "kappa", "max_minutes"})

# Config keys that set an option of the loss (`vmfml.losses.create_loss`), and the option's name.
LOSS_KEYS = {
    "directions": "directions",
    "kappa": "kappa",
    "learn_kappa": "learn_kappa",
    "class_kappa": "class_kappa",
    "vmf_margin": "angular_margin",
    "vmf_subcentres": "subcentres",
    "vmf_weighting": "weighting",
    "ema_momentum": "momentum",
    "global_init": "init",
}


@dataclass
class TrainConfig:
    # --- data ---
    data: str = field(
        default="fashion-mnist",
        metadata={
            "help": "a built-in data set (fashion-mnist, combined-30, ...) or a folder of class subfolders"
        },
    )
    data_root: str | None = field(
        default=None, metadata={"help": "where the built-in data set's files are"}
    )
    split: str = field(
        default="standard",
        metadata={
            "help": "'standard' (train/test images of the same classes), 'class-disjoint' (test "
            "classes unseen) or 'open-set' (standard on most classes, --unknown-fraction of the "
            "classes held out whole as unknown images for the open-set figures)"
        },
    )
    unknown_fraction: float = field(
        default=0.3,
        metadata={"help": "--split open-set: share of the classes held out as unknown"},
    )
    test_fraction: float = field(
        default=0.2,
        metadata={
            "help": "share of each class held out for testing (folders without a test split)"
        },
    )
    on_bad_image: str = field(
        default="raise",
        metadata={"help": "'raise' on a corrupt image, or 'skip' it with a warning"},
    )
    train_subset: int | None = field(
        default=None, metadata={"help": "train on only this many images (quick runs)"}
    )
    augment: str = field(
        default="flip",
        metadata={
            "help": "'none', 'flip' (random left-right flip) or 'flip_crop' (flip, padded crop); "
            "use none for digits, letters and other shapes a mirror changes (flip costs such "
            "data about 1 point of accuracy)"
        },
    )
    # --- model ---
    model: str = field(
        default="small_cnn",
        metadata={"help": "a registered model (vmfml.models.list_models) or timm:<name>"},
    )
    depth: int = field(
        default=3, metadata={"help": "conv blocks of small_cnn (1 to 4); ignored by other models"}
    )
    width: float = field(
        default=1.0,
        metadata={
            "help": "channel multiplier of small_cnn (1.0: 16, 32, 64, 128); ignored by other models"
        },
    )
    embed_dim: int = field(default=128, metadata={"help": "embedding dimension"})
    pretrained: bool = field(
        default=False,
        metadata={
            "help": "ImageNet weights for the backbone (hub, or the local package for efficientnet_lite0)"
        },
    )
    weights: str | None = field(
        default=None, metadata={"help": "a local weights file for the backbone"}
    )
    image_size: int | None = field(
        default=None,
        metadata={
            "help": "input size in pixels (default: the data's size, at most 64, for small_cnn; the model's own otherwise)"
        },
    )
    # --- loss ---
    loss: str = field(
        default="vmf",
        metadata={
            "help": "vmf, softmax, arcface, cosface, triplet, ... (vmfml.losses.list_losses); "
            "vmf_global etc. stand for --loss vmf --directions global"
        },
    )
    directions: str = field(
        default="accumulate",
        metadata={
            "help": "vMF mean directions: accumulate, global (the paper's: one extra pass over the "
            "training set per period), ema or learned"
        },
    )
    kappa: float = field(
        default=16.0, metadata={"help": "vMF concentration (the softmax scale of the cosines)"}
    )
    learn_kappa: bool = field(
        default=False, metadata={"help": "train kappa by gradient descent, starting from --kappa"}
    )
    class_kappa: float = field(
        default=0.0,
        metadata={
            "help": "per-class concentrations in [0, 1]: 0, one kappa for all classes (the "
            "paper); above 0, each class's kappa estimated from its mean resultant length at "
            "every refresh, log-shrunk by this factor towards --kappa, in the exact vMF mixture "
            "posterior (accumulate and global)"
        },
    )
    vmf_margin: float = field(
        default=0.0,
        metadata={
            "help": "additive angular margin m (radians, 0 to pi/2) on the true class in "
            "training: its logit becomes kappa cos(theta + m), as ArcFace's; 0: none (the paper)"
        },
    )
    vmf_subcentres: int = field(
        default=1,
        metadata={
            "help": "mean directions per class (--directions global): each class a mixture of K "
            "vMF components, from spherical k-means within the class over every full pass; "
            "1: one (the paper)"
        },
    )
    vmf_weighting: str = field(
        default="softmax",
        metadata={
            "help": "the vMF training loss: 'softmax' (the paper: cross-entropy over kappa mu . x) "
            "or 'proxy-anchor' (Proxy-Anchor's hard weighting with the mean directions as anchors; "
            "the class posterior stays the vMF softmax)"
        },
    )
    global_init: str = field(
        default="data",
        metadata={
            "help": "first mean directions of --directions global: 'data' (the paper's: a full "
            "pass of the untrained network) or 'random' (uniform on the sphere, as accumulate starts)"
        },
    )
    refresh_period: str = field(
        default="epoch",
        metadata={"help": "refresh the mean directions every 'epoch' or every N iterations"},
    )
    ema_momentum: float = field(
        default=0.9, metadata={"help": "momentum of the ema mean directions"}
    )
    # --- optimisation ---
    epochs: int | None = field(
        default=None,
        metadata={
            "help": f"training epochs; auto: as many as give about {AUTO_STEPS:,} optimizer "
            f"steps, {AUTO_MIN_EPOCHS} to {AUTO_MAX_EPOCHS} epochs (vmfml.train.length)",
            "default_text": "auto",
        },
    )
    max_minutes: float | None = field(
        default=None,
        metadata={"help": "stop after the epoch that passes this wall-clock time (minutes)"},
    )
    val_fraction: float = field(
        default=0.1,
        metadata={
            "help": "share of the training images (standard split) or classes (class-disjoint) "
            "held out to validate every epoch, keep the best epoch (best.pt) and stop early; "
            "0: no validation, the last epoch is kept"
        },
    )
    patience: int = field(
        default=10,
        metadata={
            "help": "in the second half of the epochs, stop after this many validated epochs "
            "without a better validation score (0: never stop early)"
        },
    )
    freeze_bn: bool = field(
        default=True,
        metadata={
            "help": "with a pretrained backbone (--pretrained, --weights): keep its BatchNorm "
            "statistics and parameters as pretrained while fine-tuning, as the DML literature "
            "does (false: they train)"
        },
    )
    keep_start: bool = field(
        default=True,
        metadata={
            "help": "with a pretrained backbone (--pretrained, --weights): validate the network "
            "before training too, and keep it when no trained epoch scores higher (a warning "
            "says so); false: keep the best trained epoch"
        },
    )
    batch_size: int = field(
        default=256,
        metadata={
            "help": "images per optimizer step over all processes (the global batch: each of N "
            "torchrun processes takes 1/N of it, so --lr needs no change with N)"
        },
    )
    lr: float = field(
        default=3e-3, metadata={"help": "peak learning rate (one-cycle cosine schedule)"}
    )
    weight_decay: float = field(default=5e-4, metadata={"help": "decoupled weight decay"})
    optimizer: str = field(default="adamw", metadata={"help": "adamw or sgd"})
    warmup_epochs: float = field(default=0.3, metadata={"help": "linear warm-up, in epochs"})
    # --- evaluation ---
    eval_ks: tuple[int, ...] = field(
        default=(1, 2, 4, 8), metadata={"help": "K of Recall@K, e.g. 1,2,4,8"}
    )
    eval_every: int = field(
        default=1,
        metadata={
            "help": "validate every N epochs (0: only after the last); the test set is evaluated "
            "once, at the end, on the kept model"
        },
    )
    # --- run ---
    seed: int = field(
        default=0,
        metadata={
            "help": "random seed (data order, augmentation, initial weights; and the data split "
            "unless --split-seed is given)"
        },
    )
    split_seed: int | None = field(
        default=None,
        metadata={
            "help": "seed of the data split alone (train/test images or classes, validation, "
            "--train-subset), so that runs with other --seed values share one split "
            "(default: --seed)"
        },
    )
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda, cuda:1, mps"})
    precision: str = field(
        default="32",
        metadata={
            "help": "32, bf16 or fp16 (autocast of the network; the loss stays float32), or 64 "
            "(float64, for reference runs); auto: bf16 on a GPU that supports it, 32 elsewhere "
            "(not the default until measured on a GPU: BENCHMARKS.md)"
        },
    )
    num_workers: int = field(
        default=0, metadata={"help": "data-loading processes for image folders"}
    )
    threads: int | None = field(
        default=None, metadata={"help": "CPU threads for torch (default: all cores)"}
    )
    out_dir: str = field(
        default="runs/default", metadata={"help": "run folder: checkpoint, metrics.json, plots"}
    )
    plots: bool = field(default=True, metadata={"help": "write training-curve and embedding plots"})
    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    log_to: str | None = field(
        default=None,
        metadata={
            "help": "experiment trackers that get each epoch's record (history.json's), the config "
            "and, for mlflow, the test metrics and the run's files: tensorboard, mlflow or "
            "tensorboard,mlflow (pip install 'vmfml[tracking]'); files in the run folder"
        },
    )
    mlflow_uri: str | None = field(
        default=None,
        metadata={
            "help": "MLflow tracking server for --log-to mlflow (default: a store in the run "
            "folder, OUT_DIR/mlflow.db)"
        },
    )

    def __post_init__(self) -> None:
        self.loss, self.directions = canonical_loss(self.loss, self.directions)
        choices = {
            "split": ("standard", "class-disjoint", "open-set"),
            "on_bad_image": ("raise", "skip"),
            "augment": ("none", "flip", "flip_crop"),
            "optimizer": ("adamw", "sgd"),
            "global_init": ("data", "random"),
            "vmf_weighting": WEIGHTINGS,
            "precision": PRECISIONS,
        }
        for key, valid in choices.items():
            if getattr(self, key) not in valid:
                raise ValueError(
                    f"{key} must be one of {', '.join(valid)}; got {getattr(self, key)!r}"
                )
        if self.refresh_period != "epoch" and not (
            self.refresh_period.isdigit() and int(self.refresh_period) > 0
        ):
            raise ValueError(
                f"refresh_period must be 'epoch' or a positive number of iterations; got {self.refresh_period!r}"
            )
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number; got {value!r}")
        for key in ("seed", "split_seed"):
            if getattr(self, key) is not None and getattr(self, key) < 0:
                raise ValueError(f"{key} must be 0 or more; got {getattr(self, key)}")
        positive = (
            "epochs",
            "batch_size",
            "embed_dim",
            "lr",
            "kappa",
            "threads",
            "train_subset",
            "max_minutes",
        )
        for key in positive:
            if getattr(self, key) is not None and not getattr(self, key) > 0:
                raise ValueError(f"{key} must be positive; got {getattr(self, key)!r}")
        if not 0.0 < self.unknown_fraction < 1.0:
            raise ValueError(f"unknown_fraction must be in (0, 1); got {self.unknown_fraction}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1); got {self.test_fraction}")
        if not 0.0 <= self.vmf_margin < math.pi / 2:
            raise ValueError(f"vmf_margin must be in [0, pi/2) radians; got {self.vmf_margin}")
        if self.vmf_subcentres < 1:
            raise ValueError(f"vmf_subcentres must be 1 or more; got {self.vmf_subcentres}")
        if not 0.0 <= self.ema_momentum < 1.0:
            raise ValueError(f"ema_momentum must be in [0, 1); got {self.ema_momentum}")
        if not self.eval_ks or any(k < 1 for k in self.eval_ks):
            raise ValueError(f"eval_ks must be positive integers; got {self.eval_ks}")
        self.eval_ks = tuple(int(k) for k in self.eval_ks)
        if not 0.0 <= self.warmup_epochs < (self.epochs or math.inf):
            raise ValueError(
                f"warmup_epochs must be in [0, epochs = {self.epochs}); got {self.warmup_epochs}"
            )
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1); got {self.val_fraction}")
        if self.patience < 0:
            raise ValueError(f"patience must be 0 (never stop early) or more; got {self.patience}")
        self._check_flags()

    def _check_flags(self) -> None:
        """Every setting given must reach what it sets: refuse those that do not apply."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        given = {k for k in defaults if getattr(self, k) != defaults[k]}
        if self.model != "small_cnn" and given & {"depth", "width"}:
            flags = " and ".join(f"--{k}" for k in sorted(given & {"depth", "width"}))
            raise ValueError(f"{flags} only apply to --model small_cnn, not {self.model}")
        if self.model == "small_cnn" and given & {"pretrained", "weights"}:
            raise ValueError("small_cnn has no pretrained weights: --pretrained and --weights "
                             "apply to timm and efficientnet_lite0 models")  # fmt: skip
        for key in sorted(given & {"freeze_bn", "keep_start"}):
            if not self.starts_pretrained:
                raise ValueError(
                    f"--{key.replace('_', '-')} applies to a pretrained backbone (--pretrained "
                    "true or --weights), not to a network trained from scratch"
                )
        if "test_fraction" in given and (
            self.split == "class-disjoint" or self.data == "fashion-mnist"
        ):
            raise ValueError(
                "--test-fraction applies only to --split standard on a data set without its own "
                "test split (fashion-mnist has one)"
            )
        if "unknown_fraction" in given and self.split != "open-set":
            raise ValueError("--unknown-fraction applies only to --split open-set")
        valid = loss_option_names(self.loss, self.directions)
        options = self.loss_options()
        unused = [
            key for key, option in LOSS_KEYS.items() if option in options and option not in valid
        ]
        if self.refresh_period != "epoch" and not has_period(self.loss, self.directions):
            unused.append("refresh_period")
        if unused:
            flags = ", ".join("--" + key.replace("_", "-") for key in unused)
            what = f"--loss {self.loss}" + (
                f" --directions {self.directions}" if self.loss == "vmf" else ""
            )
            raise ValueError(f"{flags} does not apply to {what}: leave it out or change the loss")
        if self.vmf_weighting != "softmax":
            clashes = [
                key
                for key in ("learn_kappa", "class_kappa", "vmf_margin", "vmf_subcentres")
                if LOSS_KEYS[key] in options
            ]
            if clashes:
                flags = ", ".join("--" + key.replace("_", "-") for key in clashes)
                raise ValueError(
                    f"--vmf-weighting {self.vmf_weighting} does not combine with {flags}: its "
                    "loss has no kappa, and one direction per class"
                )

    @property
    def starts_pretrained(self) -> bool:
        """Whether the backbone starts from trained weights (small_cnn never does: refused)."""
        return bool(self.pretrained or self.weights)

    def loss_options(self) -> dict[str, Any]:
        """The loss options these settings give (`create_loss`): those set away from their
        default, plus the strategy of the vMF loss."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        options = {
            option: getattr(self, key)
            for key, option in LOSS_KEYS.items()
            if getattr(self, key) != defaults[key]
        }
        if self.loss == "vmf":
            options["directions"] = self.directions
        return options

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["eval_ks"] = list(self.eval_ks)
        return d


def config_fields() -> list[dataclasses.Field[Any]]:
    return list(dataclasses.fields(TrainConfig))


def _check_keys(keys: typing.Iterable[str], where: str) -> None:
    valid = [f.name for f in config_fields()]
    for key in keys:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"unknown config key {key!r} in {where}{hint}; valid keys: {', '.join(valid)}"
            )


def _base_type(tp: Any) -> Any:
    """`int | None` -> int; `tuple[int, ...]` -> tuple."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    return typing.get_origin(tp) or tp


@functools.cache
def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def parse_value(key: str, value: Any) -> Any:
    """Convert a YAML or command-line value to the type of config field `key`."""
    tp = _field_types()[key]
    optional = isinstance(tp, types.UnionType) and type(None) in typing.get_args(tp)
    base = _base_type(tp)
    if value is None or (
        optional and isinstance(value, str) and value.lower() in ("none", "null", "", "auto")
    ):
        if not optional:
            raise ValueError(f"config key {key!r} cannot be empty")
        return None
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if base is tuple:
            items = (
                value if isinstance(value, list | tuple) else str(value).replace(" ", "").split(",")
            )
            return tuple(int(v) for v in items if v != "")
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if base is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        name = getattr(base, "__name__", str(base))
        raise ValueError(f"config key {key!r} expects {name}; got {value!r}") from None


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> TrainConfig:
    """Defaults, then the YAML file, then `overrides` (command line): later wins."""
    values: dict[str, Any] = {}
    if path is not None:
        path = resolve_config(path)  # a file path, or the name of a shipped config
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"cannot parse {path}: {err}") from err
        if not isinstance(loaded, dict):
            raise ValueError(f"{path} must hold a mapping of config keys to values")
        _check_keys(loaded, str(path))
        values.update({k: parse_value(k, v) for k, v in loaded.items()})
    if overrides:
        _check_keys(overrides, "the overrides")
        values.update({k: parse_value(k, v) for k, v in overrides.items()})
    return TrainConfig(**values)


def save_config(config: TrainConfig, path: str | Path) -> None:
    from vmfml.files import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
