"""Save and load models as safetensors, with their configuration in the file's metadata.

A weights file is self-describing: its metadata holds ``format = "colorgan"``, the model ``kind``
(``generator``, ``critic``, ...), ``config`` (JSON of the config dataclass) and the package
``version``; loading rebuilds exactly that architecture and then loads the tensors strictly.
No pickle is ever loaded. Shipped weights live in ``colorgan/weights/`` and are found by name.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from colorgan import __version__
from colorgan.errors import ModelLoadError, WeightsNotFoundError

__all__ = [
    "kind_of",
    "FORMAT",
    "save_model",
    "load_model",
    "read_metadata",
    "shipped_weights_path",
    "resolve_weights",
    "SHIPPED",
]

FORMAT = "colorgan"

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
) -> Path:
    """Write ``model`` and its config to a safetensors file, atomically.

    Args:
        model: a model with a ``config`` dataclass attribute (SAUNet, Critic, ...).
        path: target ``.safetensors`` path.
        dtype: store floating tensors in this dtype (``torch.float16`` halves the size).
        extra: further string metadata (training run, data, ...).

    Returns:
        The path written.
    """
    from safetensors.torch import save_file

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
        meta.update({k: str(v) for k, v in extra.items()})
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
        config = config_from_dict(json.loads(meta["config"]))
        model = build(config)
    except (ValueError, TypeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path}: bad model config in metadata: {e}") from None
    try:
        state = load_file(str(path))
    except Exception as e:
        raise ModelLoadError(f"{path}: corrupt weights ({type(e).__name__})") from None
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
