"""Training recipes: dataclasses loaded from TOML, with dotted ``--set key=value`` overrides.

A recipe names the networks, the data mix, the degradations, the validation set and the NoGAN
schedule::

    pretrain_g  ->  cycles x (pretrain_c -> gan)  ->  finetune  ->  guidance   (the last two when their steps > 0)

Every field has a default, so a TOML file only states what differs. ``asdict(config)`` is
stored in every checkpoint and exported model.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from colorgan.train.data import DegradeConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "PretrainGConfig",
    "PretrainCConfig",
    "GanConfig",
    "GuidanceConfig",
    "ValConfig",
    "SourceConfig",
    "TrainConfig",
    "load_config",
    "read_values",
    "build_dataclass",
    "apply_overrides",
]


@dataclass(frozen=True)
class PretrainGConfig:
    """Generator pretraining: L1 + feature loss, encoder frozen first, then fine-tuned.

    Attributes:
        steps: optimiser steps (0 skips the stage, e.g. when starting from a given generator).
        batch_size: images per step (per process).
        sizes: progressive crop sizes, each used for an equal share of the steps.
        lr: peak learning rate of the decoder (warm-up, then cosine decay).
        encoder_lr_mult: encoder learning rate = lr x this once unfrozen.
        freeze_encoder_frac: share of the steps with the encoder frozen.
        l1_weight: weight of L1 on normalised ab.
        feature_weight: weight of the feature loss.
        cf_weight: weight of the colourfulness loss (per-image |delta CF| / 100; 0: off).
        chroma_weight: weight of the chroma loss (per-pixel |delta |ab|| in ab / 110; 0: off).
        checkpoint_every: steps between checkpoints.
        eval_every: steps between validation scores.
    """

    steps: int = 6000
    batch_size: int = 16
    sizes: tuple[int, ...] = (64, 128)
    lr: float = 1e-3
    encoder_lr_mult: float = 0.1
    freeze_encoder_frac: float = 0.25
    l1_weight: float = 1.0
    feature_weight: float = 1.0
    cf_weight: float = 0.0
    chroma_weight: float = 0.0
    checkpoint_every: int = 100
    eval_every: int = 250


@dataclass(frozen=True)
class PretrainCConfig:
    """Critic pretraining: a binary classifier of real photos vs the current generator's output."""

    steps: int = 300
    batch_size: int = 16
    size: int = 128
    lr: float = 2e-4
    checkpoint_every: int = 100


@dataclass(frozen=True)
class GanConfig:
    """The short GAN phase with the Two Time-Scale Update Rule and automatic stopping.

    Attributes:
        steps: the most steps the phase may take (it usually stops earlier).
        lr_g: generator learning rate (paper: 2e-4).
        lr_c: critic learning rate (paper: 2e-4; TTUR allows a faster critic).
        betas: Adam betas for both networks.
        adv_weight: weight of the adversarial loss.
        l1_weight, feature_weight: weights of the reconstruction terms (kept to anchor colours).
        eval_every: steps between validation scores (and possible stops).
        patience: stop after this many evaluations without a better score.
        min_evals: never stop before this many evaluations.
        critic_acc_high, critic_acc_low: the critic "stops helping" when its running accuracy
            stays above high (it wins outright; gradients vanish) or below low (it is fooled /
            collapsed) for ``patience`` evaluations.
    """

    steps: int = 1500
    batch_size: int = 16
    size: int = 128
    lr_g: float = 2e-4
    lr_c: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.99)
    adv_weight: float = 1.0
    l1_weight: float = 1.0
    feature_weight: float = 1.0
    checkpoint_every: int = 50
    eval_every: int = 100
    patience: int = 3
    min_evals: int = 2
    critic_acc_high: float = 0.98
    critic_acc_low: float = 0.52


@dataclass(frozen=True)
class GuidanceConfig:
    """Teaching a trained generator to follow colour guidance.

    The automatic network is frozen (and in eval mode), so its automatic output stays exactly what
    it was; only :class:`~colorgan.models.generator.GuidanceBranch` learns, and with ``decoder``
    the guided copy of the decoder too. Every batch gets
    guidance simulated from the truth: colour points (a geometric number, mean ``mean_points``,
    at most ``max_points``; patches of 1-9 px holding the true mean ab; Zhang et al. 2017) or, with
    probability ``p_dense``, a dense coarse colour map with random confidence, as a reference
    photo gives.

    Attributes:
        steps: optimiser steps (0: no guidance stage, and the generator has no guidance branch).
        lr: learning rate of the branch (Adam, warm-up then cosine).
        hint_weight: extra weight of L1 on the guided pixels (the output should match a hint there).
        decoder: also train a guided copy of the decoder (``GeneratorConfig.guided_decoder``),
            started from the automatic decoder: the guided path can then reshape colour regions
            instead of only adding the branch's features to a frozen decoder. The automatic path
            keeps the original decoder, so automatic output is still unchanged.
        decoder_lr: learning rate of the guided decoder (it starts trained, so lower).
    """

    steps: int = 0
    batch_size: int = 16
    size: int = 128
    lr: float = 1e-3
    mean_points: float = 8.0
    max_points: int = 50
    p_dense: float = 0.25
    hint_weight: float = 5.0
    decoder: bool = False
    decoder_lr: float = 2e-4
    checkpoint_every: int = 100
    eval_every: int = 250


@dataclass(frozen=True)
class ValConfig:
    """The fixed validation set scored during training (held out from the training folders).

    Attributes:
        images: number of validation crops.
        size: crop size.
        holdout_every: about 1 in this many training files (by person for LFW) is held out
            when no ``--val`` folder is given.
    """

    images: int = 32
    size: int = 128
    holdout_every: int = 20


#: What ``TrainConfig.method`` can train: our NoGAN generator, or one of the paper's baselines.
METHODS = ("nogan", "cic", "iizuka")


@dataclass(frozen=True)
class SourceConfig:
    """A data folder and its sampling weight."""

    path: str
    weight: float = 1.0
    name: str = ""


@dataclass(frozen=True)
class TrainConfig:
    """A whole NoGAN recipe (or, with ``method``, the recipe of a comparison baseline).

    ``method``: ``nogan`` trains our SAUNet generator through every stage; ``cic`` and ``iizuka``
    train the paper's baselines (:mod:`colorgan.models.cic`, :mod:`colorgan.models.iizuka`) with
    the same data, sizes and steps as ``pretrain_g`` but their own losses (class-rebalanced
    cross-entropy; MSE), and no critic or GAN stages. ``generator`` then names a preset of that
    model's config (``default``, ``tiny``) or holds its fields.
    """

    method: str = "nogan"
    generator: str | dict = "default"  # a GeneratorConfig preset name or its fields
    critic: str | dict = "default"  # a CriticConfig preset name or its fields
    feature_net: str = "mobilenet_v2"
    seed: int = 0
    workers: int = 1
    cycles: int = 2
    init_generator: str = ""  # start from these generator weights (safetensors) instead of ImageNet
    data: tuple[SourceConfig, ...] = ()
    degrade: DegradeConfig = field(default_factory=DegradeConfig)
    val: ValConfig = field(default_factory=ValConfig)
    pretrain_g: PretrainGConfig = field(default_factory=PretrainGConfig)
    pretrain_c: PretrainCConfig = field(default_factory=PretrainCConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    # The generator once more after the GAN cycles, typically with the colour losses (cf_weight,
    # chroma_weight), a small learning rate and the encoder unfrozen; 0 steps: no such stage.
    finetune: PretrainGConfig = field(default_factory=lambda: PretrainGConfig(steps=0, sizes=(128,), lr=1e-4, freeze_encoder_frac=0.0))
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.feature_net not in ("mobilenet_v2", "vgg19", "none"):
            raise ValueError(f"feature_net must be mobilenet_v2, vgg19 or none, got {self.feature_net!r}")
        if self.feature_net == "none" and (self.pretrain_g.feature_weight > 0 or self.gan.feature_weight > 0 or (self.finetune.steps > 0 and self.finetune.feature_weight > 0)):
            raise ValueError("feature_net = 'none' needs pretrain_g.feature_weight = 0, gan.feature_weight = 0 and finetune.feature_weight = 0")
        if self.cycles < 0:
            raise ValueError("cycles must be >= 0")
        if self.guidance.steps > 0 and self.method != "nogan":
            raise ValueError("a guidance stage needs method = 'nogan' (the baselines take no colour guidance)")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def _model_classes(self) -> tuple[type, type]:
        """(config class, model class) of what ``method`` trains (imported only when asked)."""
        if self.method == "cic":
            from colorgan.models.cic import CICConfig, CICModel

            return CICConfig, CICModel
        if self.method == "iizuka":
            from colorgan.models.iizuka import IizukaConfig, IizukaModel

            return IizukaConfig, IizukaModel
        from colorgan.models.generator import GeneratorConfig, SAUNet

        return GeneratorConfig, SAUNet

    def generator_config(self):
        """The config of the model this recipe trains (GeneratorConfig, CICConfig or IizukaConfig);
        a recipe with a guidance stage trains a generator with a guidance branch."""
        Config = self._model_classes()[0]
        cfg = Config.preset(self.generator) if isinstance(self.generator, str) else Config.from_dict(self.generator)
        if self.guidance.steps > 0:
            cfg = replace(cfg, guidance=True, guided_decoder=self.guidance.decoder)
        return cfg

    def build_generator(self, pretrained: bool):
        """A new model of this recipe's kind; ``pretrained`` loads its encoder's ImageNet weights."""
        cfg = self.generator_config()
        return self._model_classes()[1](cfg, pretrained_encoder=pretrained and cfg.encoder != "simple")

    def critic_config(self):
        from colorgan.models.critic import CriticConfig

        return CriticConfig.preset(self.critic) if isinstance(self.critic, str) else CriticConfig.from_dict(self.critic)


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    """Instantiate dataclass ``cls`` from a dict, recursing into nested dataclasses."""
    known = {f.name: f for f in fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"unknown setting(s) in [{where}]: {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {}
    defaults = cls()
    for name, value in values.items():
        current = getattr(defaults, name)
        if is_dataclass(current) and isinstance(value, dict):
            kwargs[name] = _build(type(current), value, f"{where}.{name}" if where else name)
        elif name == "data":
            kwargs[name] = tuple(SourceConfig(**v) if isinstance(v, dict) else v for v in value)
        elif isinstance(current, tuple) and isinstance(value, list):
            kwargs[name] = tuple(value)
        elif isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            kwargs[name] = float(value)
        else:
            if current is not None and not isinstance(current, (dict, str)) and type(value) is not type(current):
                raise ValueError(f"[{where}] {name}: expected {type(current).__name__}, got {value!r}")
            kwargs[name] = value
    return cls(**kwargs)


def _parse_value(text: str) -> Any:
    # TOML's own parser reads numbers, booleans, strings, and arrays exactly as in the file.
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare string


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides to a nested dict (in place; returned for convenience)."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set needs key=value, got {item!r}")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        d = values
        for p in parts[:-1]:
            d = d.setdefault(p, {})
            if not isinstance(d, dict):
                raise ValueError(f"--set {key}: {p} is not a section")
        d[parts[-1]] = _parse_value(text.strip())
    return values


def read_values(path: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """A TOML recipe as nested dicts (empty when ``path`` is None), with overrides applied.

    Raises:
        ValueError: a missing or unreadable file, or a malformed override.
    """
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ValueError(f"{path}: no such config file") from None
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: not valid TOML ({e})") from None
    return apply_overrides(values, overrides or [])


def build_dataclass(cls: type, values: dict[str, Any], where: str = "") -> Any:
    """A frozen config dataclass from nested dicts (``[where]`` names the section in errors).

    Raises:
        ValueError: unknown keys or wrong types.
    """
    return _build(cls, values, where)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a TOML recipe (or the defaults when ``path`` is None) and apply overrides.

    Raises:
        ValueError: unknown keys, wrong types, or unreadable TOML (the message names the key).
    """
    return _build(TrainConfig, read_values(path, overrides), "")


def with_data(cfg: TrainConfig, sources: list[SourceConfig]) -> TrainConfig:
    """The recipe with its data folders replaced (``--data`` on the command line wins)."""
    return replace(cfg, data=tuple(sources))
