"""Save and load models as safetensors, with their configuration in the file's metadata.

A weights file is self-describing: its metadata holds ``format = "colorgan"``, the model ``kind``
(``generator``, ``critic``, ...), ``config`` (JSON of the config dataclass) and the package
``version``; loading rebuilds exactly that architecture and then loads the tensors strictly.
A generator's chroma calibration, when it has one, is a separate metadata entry
(``chroma_calibration``, :class:`~colorgan.models.calibration.ChromaCalibration`):
:func:`load_model` returns the bare network (what training continues from),
:func:`load_inference_model` the network with its calibration applied (what inference runs).
No pickle is ever loaded. Shipped weights live in ``colorgan/weights/`` and are found by name.

Files written before calibration moved out of the generator (ColorGAN 0.1.0 up to 2026-12-02)
kept a global gain in the config (``chroma_gain``) and the per-image gain as state-dict tensors
(``gain_head.linear.*``, with ``adaptive_gain`` in the config); they load unchanged, read as the
same network and calibration (:func:`_split_legacy_calibration`, the one place that knows).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn as nn

from colorgan import __version__
from colorgan.errors import ModelLoadError, WeightsNotFoundError

if TYPE_CHECKING:
    from colorgan.models.calibration import ChromaCalibration

__all__ = [
    "kind_of",
    "FORMAT",
    "save_model",
    "load_model",
    "read_metadata",
    "read_calibration",
    "load_inference_model",
    "shipped_weights_path",
    "resolve_weights",
    "SHIPPED",
]

FORMAT = "colorgan"
#: Metadata key of a generator's chroma calibration (JSON of ChromaCalibration).
CALIBRATION_KEY = "chroma_calibration"

#: Names of models shipped inside the package -> file name in ``colorgan/weights``.
SHIPPED: dict[str, str] = {
    "default": "colorgan-default.safetensors",
    # The paper's comparison methods, trained on the same data with the same budget (docs/MODEL_CARD.md).
    "cic": "colorgan-cic.safetensors",
    "iizuka": "colorgan-iizuka.safetensors",
}


def _builders() -> dict[str, tuple[Callable[[dict], Any], Callable[[Any], nn.Module]]]:
    # Imported lazily so that reading metadata needs no model code.
    from colorgan.models.baselines import MeanChromaConfig, MeanChromaModel
    from colorgan.models.cic import CICConfig, CICModel
    from colorgan.models.iizuka import IizukaConfig, IizukaModel
    from colorgan.models.critic import Critic, CriticConfig
    from colorgan.models.generator import GeneratorConfig, SAUNet

    return {
        "generator": (GeneratorConfig.from_dict, lambda cfg: SAUNet(cfg)),
        "critic": (CriticConfig.from_dict, lambda cfg: Critic(cfg)),
        "mean_chroma": (MeanChromaConfig.from_dict, lambda cfg: MeanChromaModel(cfg)),
        "cic": (CICConfig.from_dict, lambda cfg: CICModel(cfg, compute_bins=False)),  # bins come from the file
        "iizuka": (IizukaConfig.from_dict, lambda cfg: IizukaModel(cfg)),
    }


def kind_of(model: nn.Module) -> str:
    """The ``kind`` a model is saved as (``generator``, ``critic``, ``cic``, ...)."""
    from colorgan.models.critic import Critic
    from colorgan.models.generator import SAUNet

    if isinstance(model, SAUNet):
        return "generator"
    if isinstance(model, Critic):
        return "critic"
    kind = getattr(model, "hub_kind", None)
    if kind is None:
        raise TypeError(f"don't know how to save a {type(model).__name__}")
    return kind


def save_model(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    extra: dict[str, str] | None = None,
    calibration: "ChromaCalibration | None" = None,
) -> Path:
    """Write ``model`` and its config to a safetensors file, atomically.

    Args:
        model: a model with a ``config`` dataclass attribute (SAUNet, Critic, ...), or a
            :class:`~colorgan.models.calibration.CalibratedGenerator` (its network is saved and
            its calibration stored in the metadata).
        path: target ``.safetensors`` path.
        dtype: store floating tensors in this dtype (``torch.float16`` halves the size).
        extra: further string metadata (training run, data, ...).
        calibration: a chroma calibration to store with a generator (replaces a wrapper's).

    Returns:
        The path written.
    """
    from safetensors.torch import save_file

    from colorgan.models.calibration import CalibratedGenerator

    if isinstance(model, CalibratedGenerator):
        calibration = model.calibration if calibration is None else calibration
        model = model.net
    path = Path(path)
    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous().clone()  # no shared storage: safetensors refuses it
    meta = {
        "format": FORMAT,
        "kind": kind_of(model),
        "config": json.dumps(asdict(model.config)),
        "version": __version__,
    }
    if extra:
        meta.update({k: str(v) for k, v in extra.items() if k != CALIBRATION_KEY})
    if calibration is not None and not calibration.is_identity:
        if meta["kind"] != "generator":
            raise ValueError(f"only a generator takes a chroma calibration, not a {meta['kind']}")
        meta[CALIBRATION_KEY] = calibration.to_json()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata of a ColorGAN weights file.

    Raises:
        ModelLoadError: missing, unreadable, not safetensors, or not a ColorGAN file.
    """
    from safetensors import safe_open

    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"{p}: weights file not found")
    if p.is_dir():
        raise ModelLoadError(f"{p}: is a directory, not a weights file")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises several types for foreign files
        raise ModelLoadError(f"{p}: not a safetensors weights file ({type(e).__name__}: {str(e)[:80]})") from None
    if meta.get("format") != FORMAT or "config" not in meta or "kind" not in meta:
        raise ModelLoadError(f"{p}: a safetensors file, but not ColorGAN weights (no ColorGAN metadata)")
    return meta


def load_model(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    expect_kind: str | None = None,
) -> nn.Module:
    """Rebuild the model described in a weights file and load its tensors (strictly).

    Args:
        path: a ``.safetensors`` file written by :func:`save_model`.
        device: where to put the model.
        dtype: floating dtype of the returned model (files may store fp16).
        expect_kind: raise unless the file holds this kind of model.

    Returns:
        The model in eval mode.

    Raises:
        ModelLoadError: foreign, corrupt, or mismatching file.
    """
    from safetensors.torch import load_file

    meta = read_metadata(path)
    kind = meta["kind"]
    if expect_kind is not None and kind != expect_kind:
        raise ModelLoadError(f"{path}: holds a {kind}, not a {expect_kind}")
    builders = _builders()
    if kind not in builders:
        raise ModelLoadError(f"{path}: unknown model kind {kind!r} (written by ColorGAN {meta.get('version')}?)")
    file_major = str(meta.get("version", "0")).split(".")[0]
    if file_major != __version__.split(".")[0]:
        warnings.warn(f"{path}: written by ColorGAN {meta.get('version')}, this is {__version__}", stacklevel=2)
    config_from_dict, build = builders[kind]
    try:
        state = load_file(str(path))
    except Exception as e:
        raise ModelLoadError(f"{path}: corrupt weights ({type(e).__name__})") from None
    try:
        config_dict = json.loads(meta["config"])
        if kind == "generator":
            config_dict, state, _ = _split_legacy_calibration(config_dict, state)
        config = config_from_dict(config_dict)
        model = build(config)
    except (ValueError, TypeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path}: bad model config in metadata: {e}") from None
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise ModelLoadError(
            f"{path}: weights do not match their config "
            f"(missing {missing[:2]}, unexpected {unexpected[:2]}, wrong shape {wrong[:2]})"
        )
    state = {k: v.to(own[k].dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    return model.to(device=device, dtype=dtype).eval()


_LEGACY_HEAD = ("gain_head.linear.weight", "gain_head.linear.bias")


def _split_legacy_calibration(
    config: dict[str, Any], state: dict[str, torch.Tensor]
) -> tuple[dict[str, Any], dict[str, torch.Tensor], "ChromaCalibration | None"]:
    """Take an older generator file's calibration out of its config and tensors.

    Returns:
        The config and tensors of the bare network, and the calibration they held (None when
        they held none: a file of the current format, or an uncalibrated one).
    """
    from colorgan.models.calibration import MAX_GAIN, ChromaCalibration

    if "chroma_gain" not in config and "adaptive_gain" not in config:
        return config, state, None
    config = dict(config)
    gain = float(config.pop("chroma_gain", 1.0))
    per_image = bool(config.pop("adaptive_gain", False))
    head = [state.get(k) for k in _LEGACY_HEAD]
    state = {k: v for k, v in state.items() if k not in _LEGACY_HEAD}
    if not per_image:
        return config, state, ChromaCalibration(gain=gain)
    if head[0] is None or head[1] is None:
        raise ValueError("an adaptive_gain generator without its gain_head tensors")
    weight, bias = head[0].float().flatten().tolist(), float(head[1].float().flatten()[0])
    return config, state, ChromaCalibration(gain=gain, head_weight=tuple(weight), head_bias=bias, max_gain=MAX_GAIN)


def read_calibration(path: str | os.PathLike) -> "ChromaCalibration":
    """The chroma calibration stored with a generator (identity when it has none).

    Raises:
        ModelLoadError: not ColorGAN weights, or a bad calibration entry.
    """
    from colorgan.models.calibration import ChromaCalibration

    meta = read_metadata(path)
    if meta["kind"] != "generator":
        return ChromaCalibration()
    try:
        if CALIBRATION_KEY in meta:
            return ChromaCalibration.from_json(meta[CALIBRATION_KEY])
        config = json.loads(meta["config"])
        if "chroma_gain" not in config and "adaptive_gain" not in config:
            return ChromaCalibration()
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in _LEGACY_HEAD if k in f.keys()}
        _, _, calibration = _split_legacy_calibration(config, state)
    except (ValueError, TypeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path}: bad chroma calibration in metadata: {e}") from None
    return calibration or ChromaCalibration()


def load_inference_model(
    path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    expect_kind: str | None = None,
) -> nn.Module:
    """The model of a weights file as inference runs it: a generator with its chroma calibration
    applied (:class:`~colorgan.models.calibration.CalibratedGenerator`, or the bare network when
    it has none); other kinds as :func:`load_model` gives them. In eval mode.

    Raises:
        ModelLoadError: foreign, corrupt, or mismatching file.
    """
    from colorgan.models.calibration import CalibratedGenerator, with_calibration

    model = load_model(path, device=device, dtype=dtype, expect_kind=expect_kind)
    try:
        out = with_calibration(model, read_calibration(path))
    except ValueError as e:  # a per-image gain that does not fit the network
        raise ModelLoadError(f"{path}: {e}") from None
    if isinstance(out, CalibratedGenerator):
        out = out.to(device=device, dtype=dtype)
    return out.eval()


def shipped_weights_path(name: str = "default") -> Path | None:
    """Path of a model shipped inside the package, or None when it is not installed."""
    file = SHIPPED.get(name)
    if file is None:
        return None
    p = Path(str(resources.files("colorgan") / "weights" / file))
    return p if p.is_file() else None


def resolve_weights(name_or_path: str | os.PathLike | None) -> Path:
    """Turn a model name (``default``) or a file path into an existing weights path.

    Raises:
        WeightsNotFoundError: a name whose weights are not installed, or a missing path.
    """
    if name_or_path is None:
        name_or_path = "default"
    s = str(name_or_path)
    if s in SHIPPED:
        p = shipped_weights_path(s)
        if p is None:
            raise WeightsNotFoundError(
                f"no {s!r} model is installed in this copy of ColorGAN; pass a weights file with "
                "--weights PATH (Python: Colorizer.from_pretrained(PATH)), or train one with 'colorgan train'"
            )
        return p
    p = Path(s).expanduser()
    if not p.exists():
        known = ", ".join(sorted(SHIPPED))
        raise WeightsNotFoundError(f"{p}: no such weights file (and not a model name: {known})")
    return p
