"""Video colourisation against true colour: frame sequences whose colour is known (DAVIS).

Each sequence (a folder of frames in name order, one shot) is reduced to its luminance and
colourised through the same path as ``colorgan video`` (:func:`colorgan.video.core.colour_frames`:
network, temporal stabilisation, merge), automatically or with the first true frame as the
reference photo for the clip (the protocol of ColorMNet's paper, which gives the first frame's
colour). Measured per sequence:

* PSNR (dB) of each output frame against the true frame (sRGB, full resolution; the output's L is
  the input's, so it measures the colour), averaged over all frames, the first included;
* CDC, the colour distribution consistency of the NTIRE 2023 video colourisation challenge: the
  Jensen-Shannon divergence between the 256-bin histograms of each RGB channel of frames t and
  t + d, averaged over t, over the channels and over d in {1, 2, 4} (lower is steadier);
* the warping error of Lai et al. 2018 on ab (:func:`colorgan.video.temporal.warping_error`), with
  Farneback flow on the true luminance at the render size (lower is steadier).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["cdc", "evaluate_sequence", "evaluate_sequences"]


def _js(p: np.ndarray, q: np.ndarray) -> float:
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_pm = np.where(p > 0, p * np.log(p / m), 0.0).sum()
        kl_qm = np.where(q > 0, q * np.log(q / m), 0.0).sum()
    return float(0.5 * (kl_pm + kl_qm))


def cdc(frames: Sequence[np.ndarray], dilations: Sequence[int] = (1, 2, 4)) -> float:
    """Colour distribution consistency of uint8 RGB frames ``(H, W, 3)`` (NTIRE 2023; lower is steadier).

    Returns:
        The mean over d of the mean over t and channels of JS(hist_c(frame t), hist_c(frame t + d));
        NaN when the sequence is too short for any d.
    """
    hists = [[np.bincount(f[..., c].ravel(), minlength=256).astype(np.float64) / f[..., c].size for c in range(3)] for f in frames]
    per_d = []
    for d in dilations:
        if len(frames) <= d:
            continue
        per_d.append(np.mean([_js(hists[t][c], hists[t + d][c]) for t in range(len(frames) - d) for c in range(3)]))
    return float(np.mean(per_d)) if per_d else float("nan")


def evaluate_sequence(
    colorizer: Any,
    files: Sequence[str | os.PathLike],
    *,
    render_size: int = 256,
    temporal: float = 0.8,
    reference: str = "none",
    batch_size: int = 4,
) -> dict[str, Any]:
    """Colourise one shot's frames from their luminance and compare with their true colour.

    Args:
        colorizer: a :class:`colorgan.pipeline.Colorizer`.
        files: the true colour frames, in order.
        render_size: short side the network sees.
        temporal: the temporal strength (as ``colorgan video --temporal``).
        reference: ``none`` (automatic) or ``first`` (the first true frame as the clip's reference photo).
        batch_size: frames per forward pass.

    Returns:
        ``{"frames", "psnr", "psnr_per_frame", "cdc", "warping_error"}``.
    """
    import torch

    from colorgan import io as cio
    from colorgan.eval.metrics import psnr
    from colorgan.pipeline import resize_to_render
    from colorgan.video.core import colour_frames
    from colorgan.video.temporal import TemporalConfig, TemporalStabilizer, warping_error

    if reference not in ("none", "first"):
        raise ValueError(f"reference must be 'none' or 'first', got {reference!r}")
    truths = [cio.load_image(f) for f in files]
    ref = colorizer.prepare_reference(truths[0]) if reference == "first" else None
    stab = TemporalStabilizer(TemporalConfig(strength=temporal))
    psnrs: list[float] = []
    out8: list[np.ndarray] = []
    abs_: list[np.ndarray] = []
    L_small: list[np.ndarray] = []
    for start in range(0, len(truths), batch_size):
        chunk = truths[start : start + batch_size]
        L = torch.cat([colorizer.prepare(t).L for t in chunk])
        rgb, outs, _, _ = colour_frames(colorizer, stab, L, render_size, reference=ref)
        rgb_np = rgb.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        for t, o in zip(chunk, rgb_np):
            psnrs.append(psnr(o, t.rgb))
            out8.append(np.round(o * 255).astype(np.uint8))
        abs_.extend(outs)
        L_small.extend(resize_to_render(L, render_size, colorizer.stride)[:, 0].cpu().numpy())
    we, _ = warping_error(abs_, L_small)
    return {"frames": len(truths), "psnr": float(np.mean(psnrs)), "psnr_per_frame": psnrs, "cdc": cdc(out8), "warping_error": we}


def evaluate_sequences(colorizer: Any, root: str | os.PathLike, **kw: Any) -> dict[str, Any]:
    """:func:`evaluate_sequence` on every sub-folder of ``root`` (one shot each), and their means."""
    from colorgan.io import iter_image_files

    out: dict[str, Any] = {}
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        files = [f for f, _ in iter_image_files([folder])]
        if files:
            out[folder.name] = evaluate_sequence(colorizer, files, **kw)
    if not out:
        raise ValueError(f"{root}: no sequence folders with frames")
    keys = ("psnr", "cdc", "warping_error")
    return {"sequences": out, "mean": {k: float(np.mean([v[k] for v in out.values()])) for k in keys}}
