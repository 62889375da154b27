"""The run configuration: frozen dataclasses, loaded from YAML with dotted CLI overrides.

Unknown keys are errors with a did-you-mean suggestion; functions take the narrowest piece they
need (`build_optimizer(model, cfg.optim)`); the resolved config is written into every run dir.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mslseg.architectures import OPTIMIZERS, OPTION_DEFAULTS, PAPER, OptimRecipe, architecture, option_error
from mslseg.data.config import DATASET_KINDS, DataConfig, as_size
from mslseg.label_free_scores import DEFAULT_SCORE, LABEL_FREE_SCORES
from mslseg.methods import ADAPT_DEFAULT, METHODS
from mslseg.runtime.errors import ConfigError, ModelFormatError
from mslseg.runtime.sizes import Size

# how a message names a config key: by the CLI flag that set it where a user typed one (--size, not
# source.size), else by the key itself (YAML, --set); the CLI's flag table builds the mapping
Names = Mapping[str, str]


def named(key: str, names: Names | None) -> str:
    return (names or {}).get(key, key)


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "deeplabv2"  # a name in mslseg.architectures.MODELS (segformer-b0, ...) or python:MODULE:FUNCTION
    # DeepLab-v2's own (architectures.DEEPLAB_OPTIONS; unset: resnet101, 4 branches); set for another arch: an error
    backbone: str | None = None  # resnet101 (the paper's) | resnet50 | resnet18
    multi_level: bool = True  # an auxiliary head (DeepLab: on layer3; SegFormer: on stage 3) for multi-level
    branches: int | None = None  # DeepLab-v2's ASPP branches summed; 2 = the released MSL checkpoints
    bn: str = "train"  # train: batch stats, trainable affine (MSL recipe) | frozen (ADVENT style)
    normalization: str = PAPER.normalization  # official (BGR, Caffe mean) | imagenet; unset: the arch's recipe; ignored with init
    init: str | None = None  # start from: own .pt, a foreign file with init_format, a SegFormer folder or hf:<id>
    init_format: str | None = None  # msl | deeplab-imagenet | torchvision-resnet (foreign DeepLab init)


@dataclass(frozen=True)
class OptimConfig(OptimRecipe):
    # the fields of architectures.OptimRecipe (optimizer, lr, head_lr_mult, momentum, weight_decay,
    # poly_power, norm_decay), defined and defaulted there once; every one a config leaves unset takes
    # the architecture's recipe (apply_recipe)
    lr_scale: float = 1.0  # multiplies lr (and the heads'): short runs from scratch, as the synthetic config, take 10
    warmup_iters: int | None = None  # linear lr warm-up (from 1e-6 x lr); unset: the method's (DAFormer: 1500 of 40000 as a share)


@dataclass(frozen=True)
class MethodConfig:
    # none (source only / BN only) | minent | msl | iw-msl; where a config leaves it unset,
    # `mslseg adapt` (load_config(adapt=True)) takes the paper's full method: see adapt_method
    target_loss: str = "none"
    lambda_target: float = 0.1  # weight of the target loss (the paper: 0.1; 0.09 with multi-level)
    iw_ratio: float = 0.2  # iw-msl: alpha (the paper: 0.2); > 0 lifts rare classes, 0 is plain MSL, < 0 lowers them
    multi_level: bool = False  # aux-head source CE, and with target data the self-produced guidance
    lambda_seg: float = 0.1  # weight of the aux head's losses
    threshold: float = 0.95  # guidance: a pixel counts where either head is this confident
    # self-training (dacs, daformer, mic, iw-msl+daformer; mslseg.training.self_training)
    teacher_alpha: float = 0.999  # the EMA teacher's momentum (DACS/DAFormer/MIC: 0.999; 0.99 in DACS's code)
    pseudo_threshold: float = 0.968  # a target pixel is confident at this max probability (DACS, DAFormer)
    pseudo_ignore_top: int = 0  # rows at the top of target crops the pseudo-labels ignore (DAFormer, Cityscapes: 15)
    pseudo_ignore_bottom: int = 0  # rows at the bottom (DAFormer, Cityscapes: 120, the ego car)
    rcs_temperature: float = 0.01  # rare class sampling's T (DAFormer)
    mic_ratio: float = 0.7  # MIC: the share of blocks masked
    mic_block: int | None = None  # MIC's block side in pixels; unset: an eighth of the crop's shorter side (64 on 512)
    lambda_mic: float = 1.0  # MIC's weight of the masked image's loss
    # DAFormer's ImageNet feature distance (mslseg.training.feature_distance): 0 = off (DAFormer: 0.005);
    # needs an ImageNet-pretrained model.init
    lambda_fd: float = 0.0
    fd_classes: tuple[str, ...] = ()  # the classes it keeps near ImageNet's features (DAFormer: the things); (): all
    fd_min_ratio: float = 0.75  # a feature pixel counts where this share of its pixels is one of fd_classes
    # self-training: the network best.pt holds and evaluations score, student | teacher (the student:
    # better in 12 of 12 paired runs of benchmarks/methods.py, docs/self-training.md)
    deploy: str = "student"


@dataclass(frozen=True)
class TrainConfig:
    iterations: int = 90000  # optimisation steps
    batch_source: int = 1  # source images per step (the reference: 1)
    batch_target: int = 1  # target images per step (the reference: 1)
    seed: int = 1234
    device: str = "auto"  # auto | cpu | cuda | cuda:N (under torchrun: each rank its LOCAL_RANK GPU)
    amp: str = "auto"  # auto (bf16 on compute capability >= 8.0, else fp16 + scaler; off on CPU) | bf16 | fp16 | off
    channels_last: bool = True  # on CUDA
    workers: int = 2  # data loader processes per rank (0: load in the main process)
    log_every: int = 10  # iterations between metrics.jsonl records
    eval_every: int = 1000  # iterations between evaluations on target_val (0: only at the end)
    checkpoint_every: int = 500  # iterations between last.pt writes
    sync_bn: bool = False  # distributed: SyncBatchNorm instead of per-rank batch statistics (model.bn: train)
    compile: bool = False  # torch.compile the model (CUDA; under DDP the inner model, before wrapping)
    stop_after: int | None = None  # end this invocation after N more iterations (job time limits; --resume continues)


@dataclass(frozen=True)
class ValidationConfig:
    """Label-free validation: how a run without target labels (no target_val) picks best.pt and
    guards against collapse (mslseg.training.label_free_run)."""

    holdout: int = 64  # target frames held out of training for it (at most a tenth of the target); 0: off
    score: str = DEFAULT_SCORE  # the label-free score that picks best.pt: a key of LABEL_FREE_SCORES
    stop_on_collapse: bool = True  # a collapse (classes vanishing against the source model) stops the run


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    source: DataConfig = field(default_factory=DataConfig)
    target: DataConfig | None = None  # unlabelled target images or videos
    target_val: DataConfig | None = None  # labelled target split for evaluation (optional)
    validation: ValidationConfig = field(default_factory=ValidationConfig)  # without target_val: label-free
    out: str = "runs/run"  # run directory

    def validate(self, names: Names | None = None) -> RunConfig:
        """`self`, or ConfigError for the first invalid field, named as `names` says (a CLI flag)."""
        def n(key: str) -> str:
            return named(key, names)

        checks = [
            (self.method.target_loss in METHODS,
             f"{n('method.target_loss')} '{self.method.target_loss}' is not one of {', '.join(METHODS)}"),
            (self.train.iterations >= 1, f"{n('train.iterations')} must be >= 1"),
            (self.train.batch_source >= 1 and self.train.batch_target >= 1, "batch sizes must be >= 1"),
            (self.train.workers >= 0, "train.workers must be >= 0 (0: load in the main process)"),
            (self.train.log_every >= 1 and self.train.checkpoint_every >= 1,
             "train.log_every and train.checkpoint_every must be >= 1"),
            (self.train.eval_every >= 0, "train.eval_every must be >= 0 (0: only at the end)"),
            (self.train.stop_after is None or self.train.stop_after >= 1, "train.stop_after must be >= 1"),
            (self.optim.lr > 0 and self.optim.lr_scale > 0, "optim.lr and optim.lr_scale must be > 0"),
            (self.optim.optimizer in OPTIMIZERS, f"optim.optimizer '{self.optim.optimizer}' is not one of "
                                                 f"{', '.join(OPTIMIZERS)}"),
            (self.optim.head_lr_mult > 0 and self.optim.poly_power >= 0,
             "optim.head_lr_mult must be > 0 and optim.poly_power >= 0"),
            (0 <= self.optim.momentum < 1 and self.optim.weight_decay >= 0,
             "optim.momentum must be in [0, 1) and optim.weight_decay >= 0"),
            (self.method.lambda_target >= 0 and self.method.lambda_seg >= 0,
             f"{n('method.lambda_target')} and method.lambda_seg must be >= 0"),
            (math.isfinite(self.method.iw_ratio), "method.iw_ratio must be a finite number"),
            (0 < self.method.threshold < 1, "method.threshold must be in (0, 1)"),
            (0 <= self.method.teacher_alpha < 1, "method.teacher_alpha must be in [0, 1) (the papers: 0.999)"),
            (0 < self.method.pseudo_threshold < 1, "method.pseudo_threshold must be in (0, 1) (the papers: 0.968)"),
            (self.method.pseudo_ignore_top >= 0 and self.method.pseudo_ignore_bottom >= 0,
             "method.pseudo_ignore_top and method.pseudo_ignore_bottom must be >= 0 rows"),
            (self.method.rcs_temperature > 0, "method.rcs_temperature must be > 0 (DAFormer: 0.01)"),
            (0 <= self.method.mic_ratio < 1, "method.mic_ratio must be in [0, 1) (MIC: 0.7)"),
            (self.method.mic_block is None or self.method.mic_block >= 1, "method.mic_block must be >= 1 pixel"),
            (self.method.lambda_mic >= 0, "method.lambda_mic must be >= 0"),
            (self.method.lambda_fd >= 0, "method.lambda_fd must be >= 0 (DAFormer: 0.005; 0: off)"),
            (0 < self.method.fd_min_ratio <= 1, "method.fd_min_ratio must be in (0, 1] (DAFormer: 0.75)"),
            (self.method.deploy in ("teacher", "student"), "method.deploy must be teacher or student"),
            (self.validation.holdout >= 0, "validation.holdout must be >= 0 frames (0: no label-free validation)"),
            (self.validation.score in LABEL_FREE_SCORES,
             f"validation.score '{self.validation.score}' is not one of {', '.join(LABEL_FREE_SCORES)}"),
            (self.optim.warmup_iters is None or 0 <= self.optim.warmup_iters < self.train.iterations,
             f"optim.warmup_iters must be in [0, {n('train.iterations')})"),
            (self.model.bn in ("train", "frozen"), "model.bn must be train or frozen"),
            (self.train.amp in ("auto", "bf16", "fp16", "off"), "train.amp must be auto, bf16, fp16 or off"),
            (not (self.train.sync_bn and self.model.bn == "frozen"),
             "train.sync_bn needs model.bn: train; frozen BatchNorm uses fixed statistics, there are none to "
             "synchronise (drop train.sync_bn)"),
            (self.target is not None or self.method.target_loss not in METHODS  # (unknown: said above)
             or not METHODS[self.method.target_loss].needs_target,
             f"method {self.method.target_loss} needs target data: set target (--target)"),
            (not (self.method.multi_level and not self.model.multi_level),
             f"{n('method.multi_level')} needs a model with an auxiliary head, and {n('model.multi_level')} "
             "is false; drop one of them"),
        ]
        for ds_name, ds in (("source", self.source), ("target", self.target), ("target_val", self.target_val)):
            if ds is not None:
                checks.append((ds.kind in DATASET_KINDS,
                               f"{n(ds_name + '.kind')} '{ds.kind}' is not one of {', '.join(DATASET_KINDS)}"))
                checks.append((bool(ds.root), f"{n(ds_name + '.root')} is not set"))
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        try:
            architecture(self.model.arch)
        except ModelFormatError as exc:
            raise ConfigError(f"{n('model.arch')}: {exc}") from None
        return self


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _dataclass_of(tp: Any) -> type | None:
    """The config section (a dataclass) inside `tp` (X or X | None), else None; a Size is a value."""
    if dataclasses.is_dataclass(tp) and tp is not Size:
        return tp
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        for arg in typing.get_args(tp):
            if dataclasses.is_dataclass(arg) and arg is not Size:
                return arg
    return None


def coerce_value(value: Any, tp: Any, where: str) -> Any:
    if value is None:
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if isinstance(tp, types.UnionType) or origin is typing.Union:
        inner = [a for a in args if a is not type(None)]
        return coerce_value(value, inner[0], where)
    if tp is Size:  # 'WxH', 'W,H' or [width, height]: what YAML, --set and old run dirs hold
        return as_size(value, where)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:  # a list: 'a,b' on the command line
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(coerce_value(v, args[0], where) for v in value)
    if origin is tuple:
        if isinstance(value, str) and args == (int, int):  # a size: WIDTHxHEIGHT, the one spelling
            size = Size.parse(value, where)
            return size.width, size.height
        if isinstance(value, str):
            value = value.split(",")
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where} must be {len(args)} numbers (e.g. 512x256), got {value!r}")
        return tuple(coerce_value(v, a, where) for v, a in zip(value, args, strict=True))
    try:
        if tp is bool:
            if isinstance(value, str):
                if value.lower() in ("true", "1", "yes", "on"):
                    return True
                if value.lower() in ("false", "0", "no", "off"):
                    return False
                raise ValueError(value)
            if not isinstance(value, bool):
                raise ValueError(value)
            return value
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not a valid {tp.__name__}") from None
    return value


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"


def from_dict(cls: type, data: dict[str, Any], where: str = "", names: Names | None = None) -> Any:
    """Build dataclass `cls` from nested dicts, strictly; a bad value is named as `names` says."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(data).__name__}")
    hints = _field_types(cls)
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in hints:
            raise ConfigError(f"unknown config key '{path}'{_suggest(key, list(hints))}")
        sub = _dataclass_of(hints[key])
        if sub is not None and value is not None:
            kwargs[key] = from_dict(sub, value, path, names)
        elif value is None and hints[key] is sub:  # an empty section that cannot be absent: its defaults
            continue
        else:
            kwargs[key] = coerce_value(value, hints[key], named(path, names))
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        if isinstance(v, Size):  # 'WxH': what a user types, and what older mslseg reads back too
            return str(v)
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Apply one `a.b.c=value` override to nested dicts (value parsed as YAML)."""
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set '{dotted}': '{part}' is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def recipe_lambda_target(multi_level: bool) -> float:
    """The official recipe's lambda_T: 0.09 with multi-level guidance, else 0.1."""
    return 0.09 if multi_level else 0.1


def adapt_method(cfg: RunConfig, given: set[str]) -> RunConfig:
    """`cfg` with the method fields not in `given` set as `mslseg adapt` defaults them.

    No target loss given: the paper's full method, IW-MSL, with multi-level guidance where the
    model has an auxiliary head (unless multi_level is given). lambda_T not given: the recipe's
    for the multi-level setting (`recipe_lambda_target`).
    """
    method = cfg.method
    if "target_loss" not in given:
        method = dataclasses.replace(method, target_loss=ADAPT_DEFAULT)
        if "multi_level" not in given:
            method = dataclasses.replace(method, multi_level=cfg.model.multi_level)
    if "lambda_target" not in given:
        method = dataclasses.replace(method, lambda_target=recipe_lambda_target(method.multi_level))
    return dataclasses.replace(cfg, method=method)


def apply_recipe(cfg: RunConfig, given_optim: set[str], given_model: set[str],
                 names: Names | None = None) -> RunConfig:
    """`cfg` with the optim fields not in `given_optim`, and model.normalization unless given, taken
    from the recipe of `cfg.model.arch` (mslseg.architectures): SGD 2.5e-4 for DeepLab-v2, AdamW 6e-5
    for SegFormer. optim.lr_scale is no recipe field: it scales whichever lr results."""
    try:
        recipe = architecture(cfg.model.arch).recipe
    except ModelFormatError as exc:
        raise ConfigError(f"{named('model.arch', names)}: {exc}") from None
    fields = {f.name for f in dataclasses.fields(OptimRecipe)}
    optim = dataclasses.replace(cfg.optim, **{k: getattr(recipe, k) for k in fields - given_optim})
    model = cfg.model if "normalization" in given_model else dataclasses.replace(
        cfg.model, normalization=recipe.normalization)
    return dataclasses.replace(cfg, optim=optim, model=model)


def apply_options(cfg: RunConfig, file_only: set[str], arch_replaced: bool, names: Names | None = None) -> RunConfig:
    """`cfg` with the model settings only some architectures take (DeepLab-v2's backbone and
    branches: `Architecture.options`) at the defaults of `cfg.model.arch` where unset; one set for an
    architecture that takes no such setting is a ConfigError naming it, never silently ignored.

    Two settings that came from the config file alone (`file_only`) give way instead: those of a
    file whose architecture an override replaced (`arch_replaced`: --model segformer-b0 on a DeepLab
    config; they went with DeepLab), and DeepLab-v2's defaults (resnet101, 4), which every run
    directory's config.yaml recorded for every architecture before this check (those runs resume)."""
    arch = architecture(cfg.model.arch)
    values: dict[str, Any] = {}
    for key, default in OPTION_DEFAULTS.items():
        value = getattr(cfg.model, key)
        if key in arch.options:
            values[key] = arch.options[key] if value is None else value
        elif value is not None:
            if key not in file_only or not (arch_replaced or value == default):
                raise ConfigError(option_error(key, cfg.model.arch, named(f"model.{key}", names)))
            values[key] = None
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **values))


def load_config(path: str | Path | None, overrides: list[str] | dict[str, Any] = (), *,
                adapt: bool = False, names: Names | None = None) -> RunConfig:
    """A RunConfig from a YAML file (a path, or the name of a shipped config) plus overrides.

    The optim fields and model.normalization that neither sets take the architecture's recipe
    (`apply_recipe`). With `adapt`, the method fields that neither sets take `mslseg adapt`'s
    defaults (`adapt_method`). `names`: how errors name an override's key (the CLI flag that set it).
    """
    data: dict[str, Any] = {}
    if path is not None:
        file = resolve_config_path(path)
        data = read_yaml(file)
        try:  # keys and types of the file on their own, so that a mistake names the file
            from_dict(RunConfig, copy.deepcopy(data))
        except ConfigError as exc:
            raise ConfigError(f"{file}: {exc}") from None
    file_model = set(data.get("model") or ())
    items = list(overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides))
    for key, value in items:
        set_dotted(data, key, value)
    over_model = {k.removeprefix("model.") for k, _ in items if k.startswith("model.")}
    cfg = from_dict(RunConfig, data, names=names)
    cfg = apply_recipe(cfg, set(data.get("optim") or ()), set(data.get("model") or ()), names)
    cfg = apply_options(cfg, file_model - over_model, "arch" in over_model, names)
    if adapt:
        cfg = adapt_method(cfg, set(data.get("method") or ()))
    cfg = method_warmup(cfg)
    return cfg.validate(names)


def method_warmup(cfg: RunConfig) -> RunConfig:
    """`cfg` with optim.warmup_iters, where unset, the method's warm-up (mslseg.methods: DAFormer's
    1500 of 40000 iterations, as that share of this run's), else 0: the written config holds the number."""
    if cfg.optim.warmup_iters is not None:
        return cfg
    entry = METHODS.get(cfg.method.target_loss)
    share = entry.self_training.warmup_share if entry is not None and entry.self_training is not None else 0.0
    return dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, warmup_iters=math.ceil(share * cfg.train.iterations)))


def shipped_configs() -> dict[str, Path]:
    folder = Path(__file__).resolve().parent.parent / "configs"
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def file_keys(path: str | Path) -> frozenset[str]:
    """The dotted keys a config file sets (method.teacher_alpha, ...): where a setting came from."""
    def walk(data: Any, prefix: str) -> list[str]:
        if not isinstance(data, dict):
            return [prefix]
        return [key for k, v in data.items() for key in walk(v, f"{prefix}.{k}" if prefix else str(k))]

    return frozenset(walk(read_yaml(resolve_config_path(path)), ""))


def resolve_config_path(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    shipped = shipped_configs()
    if str(path) in shipped:
        return shipped[str(path)]
    raise ConfigError(
        f"config {path} does not exist; give a YAML file or a shipped config: {', '.join(shipped)}"
    )


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path} ({exc.strerror}); check the path") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())
        raise ConfigError(f"config {path} is not valid YAML{where}: {problem}; fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a YAML mapping")
    return data
