"""Run an exported ColorGAN generator with ONNX Runtime behind the usual model interface.

:class:`OnnxModel` is a drop-in ``model`` for :class:`colorgan.pipeline.Colorizer`: it is called
on a torch tensor of normalised L and returns a torch tensor of normalised ab, exactly like
:class:`~colorgan.models.generator.SAUNet`, so the CLI, the Python API and the folder runner use
one inference path whichever backend runs the network::

    from colorgan.onnx_backend import OnnxModel
    from colorgan.pipeline import Colorizer

    colorizer = Colorizer(OnnxModel("model.onnx"), device="cpu")
    # or: Colorizer.from_pretrained("model.onnx")

A file is written by ``colorgan export --format onnx`` (:mod:`colorgan.export`), whose metadata
says what the graph computes; files without that metadata are refused rather than guessed at.
onnxruntime is imported only when a model is loaded (``pip install 'colorgan[onnx]'``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn

from colorgan.errors import ModelLoadError
from colorgan.models.layers import check_l_input

__all__ = ["OnnxModel", "ONNX_FORMAT", "INPUT_NAME", "OUTPUT_NAME", "import_onnxruntime"]

#: ``format`` entry of the metadata of every ONNX file that ColorGAN writes.
ONNX_FORMAT = "colorgan-onnx"
#: Graph input: ``(B, 1, H, W)`` float32 normalised L (``L / 50 - 1`` in [-1, 1]).
INPUT_NAME = "l_norm"
#: Graph output: ``(B, 2, H, W)`` float32 normalised ab (``ab / 110``, tanh-bounded).
OUTPUT_NAME = "ab_norm"


def import_onnxruntime() -> Any:
    """``import onnxruntime``, or a clear error naming the extra to install."""
    try:
        import onnxruntime
    except ImportError:
        raise ModelLoadError(
            "the ONNX backend needs onnxruntime: pip install 'colorgan[onnx]'"
        ) from None
    return onnxruntime


def _default_providers(ort: Any) -> list[str]:
    # CUDA first where this onnxruntime build has it (onnxruntime-gpu); the CPU provider is
    # always there and always last, so a session never fails for want of a GPU.
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class OnnxModel(nn.Module):
    """An exported generator run by ONNX Runtime, callable like the PyTorch model.

    It is an ``nn.Module`` without parameters so that :class:`~colorgan.pipeline.Colorizer` can
    treat it like any model (``.to()``, ``.eval()`` are no-ops); the computation happens in an
    ``onnxruntime.InferenceSession`` on the CPU (or CUDA with onnxruntime-gpu).

    Args:
        path: an ``.onnx`` file written by ``colorgan export --format onnx``.
        threads: intra-op threads of the session; None follows ``torch.get_num_threads()``
            (itself set by ``OMP_NUM_THREADS`` or ``torch.set_num_threads``), so one setting
            governs both backends.
        providers: onnxruntime execution providers, in order of preference (default: CUDA if
            this onnxruntime has it, then CPU).
        spinning: let the intra-op threads busy-wait between operators (onnxruntime's default:
            lowest latency for one call). Off, they sleep, leaving the cores to the threads that
            decode and encode a folder's photos beside the network.

    Shapes: ``forward(l_norm (B, 1, H, W) float in [-1, 1]) -> (B, 2, H, W) float32`` normalised
    ab in [-1, 1], on the input's device. H and W must be multiples of :attr:`stride`.

    Raises:
        ModelLoadError: onnxruntime missing; the file missing, corrupt, or not ColorGAN's.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        spinning: bool = True,
    ) -> None:
        super().__init__()
        ort = import_onnxruntime()
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(f"{self.path}: ONNX model file not found")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads) if threads else max(1, torch.get_num_threads())
        # Operators of this network run one after another; a second pool would only add threads.
        options.inter_op_num_threads = 1
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: its warnings are about fusions, not the user's data
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=list(providers or _default_providers(ort))
            )
        except Exception as e:  # onnxruntime raises its own types for foreign/corrupt files
            raise ModelLoadError(f"{self.path}: not a loadable ONNX model ({type(e).__name__}: {str(e)[:120]})") from None
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        if meta.get("format") != ONNX_FORMAT:
            raise ModelLoadError(
                f"{self.path}: an ONNX model, but not one exported by ColorGAN "
                "(no ColorGAN metadata; export it with 'colorgan export --format onnx')"
            )
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
            raise ModelLoadError(f"{self.path}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}")
        #: The metadata written at export (``config`` JSON, ``version``, ``stride``, ...).
        self.metadata: dict[str, str] = meta
        #: H and W of the input must be multiples of this (the encoder's total stride).
        self.stride = int(meta.get("stride", 32))
        #: The generator's configuration as a dict (from the metadata), or None.
        self.config_dict: dict | None = json.loads(meta["config"]) if "config" in meta else None
        self.providers: list[str] = list(self.session.get_providers())
        # The file's SHA-256 as the module's only state: code that fingerprints a model by its
        # state_dict (the video work folder, caches) tells two ONNX files apart.
        digest = hashlib.sha256(self.path.read_bytes()).digest()
        self.register_buffer("file_sha256", torch.tensor(list(digest), dtype=torch.uint8))

    def forward(self, l_norm: torch.Tensor) -> torch.Tensor:
        check_l_input(l_norm, self.stride)
        # onnxruntime wants a C-contiguous float32 numpy array (a channels_last or bf16 tensor
        # from the caller is converted here, at the cost of one copy of a render-size image).
        x = l_norm.detach().to("cpu", torch.float32).contiguous().numpy()
        (ab,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})
        return torch.from_numpy(ab).to(l_norm.device)

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}, providers={self.providers}"
