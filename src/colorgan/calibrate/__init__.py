"""Fitting a generator's chroma calibration (``colorgan calibrate``): the one place it is fitted.

The calibration itself (:class:`colorgan.models.calibration.ChromaCalibration`) is a small value
stored in the weights file's metadata and applied around the network at inference; training never
sees it. Here it is fitted after training:

1. optionally a per-image gain, by ridge regression on *training* photos (:mod:`.head`);
2. a global gain on top of it, chosen on photos *held out* from training by a stated rule
   (:mod:`.gain`). Never on the evaluation set.

``calibrate`` does both and returns the result with a record of how it was chosen.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Sequence

import torch

from colorgan.calibrate.gain import MAX_CF_RATIO, GainPoint, chroma_gain_curve, choose_gain
from colorgan.models.calibration import ChromaCalibration

__all__ = ["CalibrationResult", "calibrate", "RULES"]

log = logging.getLogger(__name__)


def RULES(target: float, min_psnr: float | None) -> dict[str, str]:  # noqa: N802 - a table of texts
    """What each rule of :func:`colorgan.calibrate.gain.choose_gain` means, in words."""
    return {
        "min_dcf": f"the lowest dCF with CF ratio in [{target}, {MAX_CF_RATIO}] and PSNR >= {min_psnr} dB",
        "target": f"the smallest gain reaching CF ratio {target}",
        "unreached": f"no gain reaches CF ratio {target}, so the largest",
    }


@dataclasses.dataclass(frozen=True)
class CalibrationResult:
    """A fitted calibration and how it was chosen.

    Attributes:
        calibration: what to store with the network.
        chosen: the global gain's point on the curve.
        rule: which rule chose it (``min_dcf``, ``target`` or ``unreached``).
        curve: every candidate gain's scores on the held-out photos.
        photos: how many held-out files were given for the curve (unreadable and grey ones are skipped).
        per_image: the per-image fit's record (photos, ridge strength, cross-validated errors), or {}.
    """

    calibration: ChromaCalibration
    chosen: GainPoint
    rule: str
    curve: list[GainPoint]
    photos: int
    per_image: dict[str, Any]

    def record(self, target: float, min_psnr: float | None) -> dict[str, Any]:
        """The JSON-able record kept in the weights file (``calibration``) and the ``--json`` file."""
        floor = {} if min_psnr is None else {"min_psnr": min_psnr, "max_ratio": MAX_CF_RATIO}
        return {"photos": self.photos, "target": target, **floor, "rule": self.rule, "gain": self.calibration.gain,
                "curve": [dataclasses.asdict(c) for c in self.curve], **({"gain_head": self.per_image} if self.per_image else {})}


def calibrate(
    net: torch.nn.Module,
    held_out: Sequence[str | os.PathLike],
    *,
    gains: Sequence[float],
    target: float,
    min_psnr: float | None = None,
    fit_files: Sequence[str | os.PathLike] | None = None,
    device: str | torch.device = "cpu",
) -> CalibrationResult:
    """Fit a calibration for a bare network.

    Args:
        net: the generator (a calibration it may have is ignored: the fit is against the network).
        held_out: colour photos held out from training, for the global gain's curve.
        gains: candidate global gains (> 0).
        target: the CF ratio to reach (see :func:`~colorgan.calibrate.gain.choose_gain`).
        min_psnr: with it, the lowest-dCF rule inside the CF band above this PSNR floor.
        fit_files: training photos to fit a per-image gain on first (None: global gain only).
        device: where the network runs.
    """
    from colorgan.calibrate import head
    from colorgan.models.calibration import with_calibration
    from colorgan.models.fold import plain_model
    from colorgan.pipeline import Colorizer

    net = getattr(net, "net", net)
    base = ChromaCalibration()
    record: dict[str, Any] = {}
    if fit_files is not None:
        samples = head.collect_samples(net, fit_files, device=device)
        fit = head.fit_ridge(samples.features, samples.target)
        base = head.head_calibration(fit)
        record = {"photos": len(samples.files), "alpha": fit.alpha, "cv_mse": fit.cv_mse, "cv_mse_mean": fit.cv_mse_mean}
        log.info("per-image gain: ridge alpha %g; cross-validated MSE of log gain %.4f (predicting the mean: %.4f)",
                 fit.alpha, fit.cv_mse, fit.cv_mse_mean)
    colorizer = Colorizer(plain_model(with_calibration(net, base)), device=device)
    curve = chroma_gain_curve(colorizer, held_out, gains)
    chosen, rule = choose_gain(curve, target, min_psnr=min_psnr)
    return CalibrationResult(base.with_gain(chosen.gain), chosen, rule, list(curve), len(held_out), record)
