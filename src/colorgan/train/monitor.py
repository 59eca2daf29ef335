"""Monitoring: CSV logs, loss-curve plots, validation grids, and the automatic inflection point.

The inflection point (where the GAN phase stops helping) is found from a critic-independent
validation score computed on a fixed held-out batch:

* ``hist_js``: Jensen-Shannon divergence between the 2D ab histograms of predictions and ground
  truth over the whole batch (a cheap distribution-level realism proxy: desaturated output piles
  up near ab = 0, garish output spreads too wide, a colour cast shifts the mass);
* ``cf_gap``: |mean CF of the predictions / mean CF of the truths - 1| (too dull or too
  garish), with CF the colourfulness of Hasler and Suesstrunk on the sRGB images, the measure
  the evaluation reports;
* ``dcf_rel``: the mean per-image |CF(prediction) - CF(truth)| over the truths' mean CF
  (colour that is right on average but the same everywhere: dull where the truth is vivid);
* ``l1_ab``: mean |ab error| in Lab units, weighted lightly, so colours stay anchored to truth.

``score = hist_js + cf_gap + dcf_rel + l1_ab / 50``; lower is better. CF replaced a ratio of
mean chroma here: that ratio said 0.94 for the v0.1 network whose CF ratio on held-out photos
was 0.68 (its colours varied too little within an image, which mean chroma does not see). The GAN phase keeps the best
checkpoint and stops when the score has not improved for ``patience`` evaluations, or when the
critic's running accuracy saturates (it no longer gives useful gradients).
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from colorgan import color
from colorgan.colourfulness import colourfulness_batch

__all__ = ["CsvLog", "val_scores", "Plateau", "save_grid", "plot_curves", "SCORE_VERSION"]

#: Version of the validation score's formula, stored with the stopping rule's state: 1 = ab
#: histogram JS + mean-chroma gap + L1/50; 2 = JS + CF-ratio gap + relative delta-CF + L1/50.
SCORE_VERSION = 2

log = logging.getLogger(__name__)


def _after(row: dict, step: int) -> bool:
    try:
        return float(row.get("step") or "nan") > step
    except ValueError:
        return False


class CsvLog:
    """Append rows to a CSV file, writing the header once; flushed after every row.

    A file written by an older version with other columns (a run resumed after an upgrade) is
    rewritten first under the union of its columns and the new ones, so that every row stays
    under its own header instead of new rows shifting under old names.

    ``after``: the step a resumed stage continues from. Rows logged after it (a run killed between
    two checkpoints logs steps that it then runs again) are dropped, so that no step appears twice.
    """

    def __init__(self, path: str | Path, columns: Sequence[str], after: int | None = None) -> None:
        self.path = Path(path)
        self.columns = list(columns)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        if not new:
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                old_cols = list(reader.fieldnames or [])
                rows = list(reader)
            kept = rows if after is None else [r for r in rows if not _after(r, after)]
            if old_cols != self.columns or len(kept) != len(rows):
                rows = kept
                import io

                from colorgan.io import atomic_write

                self.columns += [c for c in old_cols if c not in self.columns]
                text = io.StringIO(newline="")
                w = csv.DictWriter(text, fieldnames=self.columns, extrasaction="ignore")
                w.writeheader()
                w.writerows(rows)
                atomic_write(self.path, text.getvalue().encode())
        self._f = open(self.path, "a", newline="")
        self._w = csv.DictWriter(self._f, fieldnames=self.columns, extrasaction="ignore")
        if new:
            self._w.writeheader()
            self._f.flush()

    def write(self, row: dict) -> None:
        self._w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def _ab_hist(ab: torch.Tensor, bins: int = 16) -> torch.Tensor:
    # ab: (B, 2, H, W) in Lab units -> normalised 2D histogram over [-110, 110]^2
    a = ab[:, 0].flatten().clamp(-110, 109.999)
    b = ab[:, 1].flatten().clamp(-110, 109.999)
    ia = ((a + 110) / 220 * bins).long()
    ib = ((b + 110) / 220 * bins).long()
    h = torch.bincount(ia * bins + ib, minlength=bins * bins).double()
    return h / h.sum()


def val_scores(ab_pred_norm: torch.Tensor, ab_true_norm: torch.Tensor, l_norm: torch.Tensor) -> dict[str, float]:
    """Critic-independent validation scores of a batch (see the module docstring).

    Args:
        ab_pred_norm: ``(B, 2, H, W)`` predicted ab / 110.
        ab_true_norm: ``(B, 2, H, W)`` true ab / 110.
        l_norm: ``(B, 1, H, W)`` the true L, normalised as the generator sees it (L / 50 - 1).

    Returns:
        ``l1_ab``, ``chroma_ratio`` (mean chroma over true mean chroma, for the logs),
        ``cf_ratio``, ``cf_gap``, ``dcf`` (mean per-image |delta CF|), ``dcf_rel``,
        ``hist_js`` and the combined ``score``.
    """
    p = color.denormalize_ab(ab_pred_norm.detach().float().cpu())
    t = color.denormalize_ab(ab_true_norm.detach().float().cpu())
    L = color.denormalize_l(l_norm.detach().float().cpu())
    l1 = (p - t).abs().mean().item()
    chroma_p = p.square().sum(1).sqrt().mean().item()
    chroma_t = t.square().sum(1).sqrt().mean().item()
    ratio = chroma_p / max(chroma_t, 1e-6)
    cf_p = colourfulness_batch(color.lab_to_rgb(torch.cat([L, p], 1)).double())
    cf_t = colourfulness_batch(color.lab_to_rgb(torch.cat([L, t], 1)).double())
    cf_t_mean = max(cf_t.mean().item(), 1e-6)
    cf_ratio = cf_p.mean().item() / cf_t_mean
    dcf = (cf_p - cf_t).abs().mean().item()
    dcf_rel = dcf / cf_t_mean
    hp, ht = _ab_hist(p), _ab_hist(t)
    m = (hp + ht) / 2

    def kl(x: torch.Tensor, y: torch.Tensor) -> float:
        mask = x > 0
        return float((x[mask] * (x[mask] / y[mask]).log()).sum())

    js = 0.5 * kl(hp, m) + 0.5 * kl(ht, m)
    cf_gap = abs(cf_ratio - 1.0)
    return {
        "l1_ab": l1, "chroma_ratio": ratio, "cf_ratio": cf_ratio, "cf_gap": cf_gap, "dcf": dcf, "dcf_rel": dcf_rel,
        "hist_js": js, "score": js + cf_gap + dcf_rel + l1 / 50.0,
    }


@dataclass
class Plateau:
    """Tracks the validation score and the critic's accuracy; says when to keep and when to stop.

    Attributes:
        patience: evaluations without improvement (or with a saturated critic) before stopping.
        min_evals: evaluations before any stop is allowed.
        acc_high, acc_low: critic accuracy bounds outside which it gives no useful feedback.
    """

    patience: int = 3
    min_evals: int = 2
    acc_high: float = 0.98
    acc_low: float = 0.52
    best: float = math.inf
    best_step: int = -1
    evals: int = 0
    since_best: int = 0
    saturated: int = 0
    history: list = field(default_factory=list)

    def update(self, step: int, score: float, critic_acc: float) -> tuple[bool, str | None]:
        """Record one evaluation. Returns (is_new_best, stop_reason or None)."""
        self.evals += 1
        self.history.append((step, score, critic_acc))
        is_best = score < self.best
        if is_best:
            self.best, self.best_step, self.since_best = score, step, 0
        else:
            self.since_best += 1
        self.saturated = self.saturated + 1 if (critic_acc > self.acc_high or critic_acc < self.acc_low) else 0
        if self.evals < self.min_evals:
            return is_best, None
        if self.since_best >= self.patience:
            return is_best, (
                f"validation score did not improve for {self.since_best} evaluations "
                f"(best {self.best:.4f} at step {self.best_step})"
            )
        if self.saturated >= self.patience:
            side = "above" if critic_acc > self.acc_high else "below"
            bound = self.acc_high if critic_acc > self.acc_high else self.acc_low
            return is_best, f"critic accuracy {critic_acc:.3f} stayed {side} {bound} for {self.saturated} evaluations"
        return is_best, None

    def state_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("best", "best_step", "evals", "since_best", "saturated", "history")}
        return {**d, "score_version": SCORE_VERSION}

    def load_state_dict(self, d: dict) -> None:
        d = dict(d)
        version = d.pop("score_version", 1)
        for k, v in d.items():
            setattr(self, k, v)
        if version != SCORE_VERSION:
            # A best score from another formula is not comparable with new ones: the next
            # evaluation becomes the best, and patience counts afresh from there.
            log.warning("validation score formula changed since this checkpoint (v%s -> v%s); its best score is reset", version, SCORE_VERSION)
            self.best, self.since_best = math.inf, 0


def save_grid(l_norm: torch.Tensor, ab_pred: torch.Tensor, ab_true: torch.Tensor, path: str | Path, n: int = 8) -> Path:
    """Write a PNG grid: one row each of input grey, prediction, ground truth (``n`` columns)."""
    from colorgan.io import save_image

    n = min(n, l_norm.shape[0])
    L = color.denormalize_l(l_norm[:n].float().cpu())
    rows = []
    for ab in (torch.zeros_like(ab_pred[:n]), ab_pred[:n], ab_true[:n]):
        rgb = color.lab_to_rgb(torch.cat([L, color.denormalize_ab(ab.float().cpu())], 1))
        rows.append(torch.cat(list(rgb), dim=2))  # (3, H, n*W)
    grid = torch.cat(rows, dim=1).permute(1, 2, 0).numpy()
    return save_image(path, grid)


def plot_curves(csv_path: str | Path, png_path: str | Path, columns: Sequence[str], title: str = "") -> Path | None:
    """Plot columns of a CSV log against ``step`` (the paper's Figure 3); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = list(csv.DictReader(open(csv_path)))
    if not rows:
        return None
    fig, axes = plt.subplots(len(columns), 1, figsize=(8, 2.2 * len(columns)), sharex=True, squeeze=False)
    for ax, col in zip(axes[:, 0], columns):
        pts = [(float(r["step"]), float(r[col])) for r in rows if r.get(col) not in (None, "", "nan")]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, lw=1)
            if len(ys) > 20:  # a running mean makes trends readable
                k = max(5, len(ys) // 30)
                sm = np.convolve(ys, np.ones(k) / k, mode="valid")
                ax.plot(xs[k - 1 :], sm, lw=2)
        ax.set_ylabel(col)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    if title:
        axes[0, 0].set_title(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)
    return Path(png_path)
