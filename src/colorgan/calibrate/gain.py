"""The global chroma gain: scored on held-out photos, chosen by a stated rule.

For each photo (256 px protocol: short side 256, centre crop) the model predicts ab once; then for
each candidate gain g the output ``Lab(L, g * ab)`` is rendered (gamut-clipped as always) and
compared with the truth: mean colourfulness ratio (Hasler and Suesstrunk), mean |CF(output) -
CF(truth)| and PSNR. :func:`choose_gain` turns that curve into one gain and names the rule.
Photos must be held out from training, never the evaluation set.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Iterator, Sequence

import numpy as np
import torch

from colorgan import color

__all__ = ["MAX_CF_RATIO", "GainPoint", "ProtocolPhoto", "protocol_photos", "chroma_gain_curve", "choose_gain", "pick_gain"]

log = logging.getLogger(__name__)

# The upper end of the CF ratio a colouriser should land in (the default model's acceptance band
# is 0.80-1.15 of the truth's mean colourfulness): above it colours read as garish.
MAX_CF_RATIO = 1.15


@dataclasses.dataclass(frozen=True)
class GainPoint:
    """Scores of one candidate gain over the calibration photos."""

    gain: float
    cf_ratio: float  # mean CF of the outputs / mean CF of the truths
    delta_cf: float  # mean |CF(output) - CF(truth)|
    psnr: float  # mean PSNR (dB) against the truth rendered through Lab


@dataclasses.dataclass(frozen=True)
class ProtocolPhoto:
    """One colour photo under the 256 px protocol.

    Attributes:
        file: the photo.
        L: ``(1, 1, size, size)`` L in [0, 100].
        truth: ``(size, size, 3)`` sRGB in [0, 1], the photo rendered through Lab like the outputs.
    """

    file: str
    L: torch.Tensor
    truth: np.ndarray


def protocol_photos(files: Sequence[str | os.PathLike], *, size: int = 256) -> Iterator[ProtocolPhoto]:
    """Yield a :class:`ProtocolPhoto` per readable colour photo.

    As the evaluation report does, unreadable and greyscale truths are left out (a grey truth's
    CF of 0 would pull a colourfulness target down); unreadable ones are logged.
    """
    from colorgan import io as cio
    from colorgan.errors import ImageLoadError
    from colorgan.eval.metrics import center_crop_resize
    from colorgan.eval.report import ground_truth

    for f in files:
        try:
            loaded = cio.load_image(f)
        except ImageLoadError as e:
            log.warning("skipped %s", e)
            continue
        if loaded.kind == "grey":
            continue
        lab, truth_t = ground_truth(center_crop_resize(loaded.rgb, size), protocol="full")
        yield ProtocolPhoto(str(f), lab[:, :1], truth_t[0].permute(1, 2, 0).numpy())


def chroma_gain_curve(
    colorizer: "object",
    files: Sequence[str | os.PathLike],
    gains: Sequence[float],
    *,
    size: int = 256,
    render_size: int = 256,
) -> list[GainPoint]:
    """Score each gain on colour photos (see the module docstring).

    Args:
        colorizer: a :class:`colorgan.pipeline.Colorizer` running the network the gains apply
            to (with a per-image gain already applied, if there is to be one).
        files: colour photos held out from training.
        gains: candidate gains (> 0).
        size: protocol size (short side resized to it, then centre-cropped square).
        render_size: short side the model sees.

    Returns:
        One :class:`GainPoint` per gain, in the order given.
    """
    from colorgan.eval.metrics import colourfulness, psnr

    cf_true: list[float] = []
    cf_pred: dict[float, list[float]] = {g: [] for g in gains}
    psnrs: dict[float, list[float]] = {g: [] for g in gains}
    for p in protocol_photos(files, size=size):
        ab = colorizer.predict_ab(p.L, render_size)  # type: ignore[attr-defined]
        cf_true.append(colourfulness(p.truth))
        for g in gains:
            out = color.merge_luminance(p.L, ab * g)[0].permute(1, 2, 0).numpy()
            cf_pred[g].append(colourfulness(out))
            psnrs[g].append(psnr(out, p.truth))
    if not cf_true:
        raise ValueError("no photos to calibrate on")
    mean_true = float(np.mean(cf_true))
    return [
        GainPoint(
            gain=float(g),
            cf_ratio=float(np.mean(cf_pred[g])) / mean_true,
            delta_cf=float(np.mean(np.abs(np.array(cf_pred[g]) - np.array(cf_true)))),
            psnr=float(np.mean(psnrs[g])),
        )
        for g in gains
    ]


def choose_gain(
    curve: Sequence[GainPoint], target: float, *, min_psnr: float | None = None, max_ratio: float = MAX_CF_RATIO
) -> tuple[GainPoint, str]:
    """Choose a gain from a calibration curve, and say which rule chose it.

    Without ``min_psnr``: the point with the smallest gain whose CF ratio reaches ``target``
    (rule ``"target"``), i.e. as little extra colour as reaches the target; the largest gain if
    none does (``"unreached"``).

    With ``min_psnr``: the point with the lowest delta-CF among those whose CF ratio lies in
    ``[target, max_ratio]`` and whose PSNR is at least ``min_psnr`` dB (``"min_dcf"``), i.e. the
    gain that best matches each photo's colourfulness without giving up more than the PSNR floor
    allows. If no point qualifies, the rule above decides.

    Raises:
        ValueError: an empty curve.
    """
    if not curve:
        raise ValueError("the calibration curve is empty")
    ordered = sorted(curve, key=lambda p: p.gain)
    if min_psnr is not None:
        ok = [p for p in ordered if target <= p.cf_ratio <= max_ratio and p.psnr >= min_psnr]
        if ok:
            return min(ok, key=lambda p: p.delta_cf), "min_dcf"
    for p in ordered:
        if p.cf_ratio >= target:
            return p, "target"
    return ordered[-1], "unreached"


def pick_gain(
    curve: Sequence[GainPoint], target: float, *, min_psnr: float | None = None, max_ratio: float = MAX_CF_RATIO
) -> GainPoint:
    """The point :func:`choose_gain` chooses."""
    return choose_gain(curve, target, min_psnr=min_psnr, max_ratio=max_ratio)[0]
