"""The colourfulness formula CF of Hasler and Suesstrunk (2003), shared by training and evaluation.

The training loss (:func:`colorgan.train.losses.colourfulness_loss`), the training monitor and the
evaluation's metric (:func:`colorgan.eval.metrics.colourfulness`, ``delta-CF``) all measure with
this one function, so that what training optimises is exactly what the evaluation reports. It
lives below both (training never imports evaluation). Torch only.
"""

from __future__ import annotations

import torch

__all__ = ["colourfulness_batch"]


def colourfulness_batch(rgb: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Colourfulness CF of each image of a batch, on the 0-255 scale; differentiable.

    With ``rg = R - G`` and ``yb = (R + G) / 2 - B`` over all pixels (R, G, B in 0-255),
    ``CF = sqrt(std_rg^2 + std_yb^2) + 0.3 sqrt(mean_rg^2 + mean_yb^2)`` (population std).
    A grey image has CF 0; the paper rates about 33 "moderately" and above 59 "highly colourful".

    Args:
        rgb: ``(B, 3, H, W)`` sRGB in [0, 1].
        eps: added under the two square roots, whose gradient is infinite at a grey image
            (a loss passes a small value; 0 gives the exact CF).

    Returns:
        ``(B,)`` CF >= 0, in float64 for float64 input, else float32.
    """
    x = (rgb if rgb.dtype == torch.float64 else rgb.float()) * 255.0
    rg = (x[:, 0] - x[:, 1]).flatten(1)
    yb = (0.5 * (x[:, 0] + x[:, 1]) - x[:, 2]).flatten(1)
    std = (rg.var(1, unbiased=False) + yb.var(1, unbiased=False) + eps).sqrt()
    mean = (rg.mean(1).square() + yb.mean(1).square() + eps).sqrt()
    return std + 0.3 * mean
