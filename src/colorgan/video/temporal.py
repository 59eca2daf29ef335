"""Temporal stability for video: optical flow, reliability masks, scene cuts, and the warping error.

A colouriser run frame by frame flickers: the network sees each frame alone, so a wall that is
beige in one frame can turn grey in the next. :class:`TemporalStabilizer` removes most of that
flicker at render size, where it is cheap:

1. Optical flow is computed on the frames' *luminance* (which we know exactly) with OpenCV's DIS,
   in both directions between the previous frame and the current one.
2. The previous frame's *stabilised* ab is warped into the current frame along the flow.
3. A pixel's flow is trusted when it passes the forward-backward check of Sundaram et al.
   (ECCV 2010), the photometric check (the warped previous L matches the current L), and stays
   inside the image: the reliability mask.
4. Where the flow is reliable, the output is ``s * warped_previous + (1 - s) * prediction`` with
   ``s`` the temporal strength; elsewhere (occlusions, new content) the prediction alone. Because
   the previous *output* is warped, this is an exponential moving average along motion paths with
   a memory of about ``1 / (1 - s)`` frames.
5. Averaging two ab vectors of different hue shortens them (greys the colour). The blend therefore
   keeps the chroma magnitude, ``s |warped| + (1 - s) |prediction|``, and only averages the hue.
6. At a scene cut (an abrupt change in the shape of the L histogram, or a frame whose flow from
   the previous one is reliable on less than half of it) the state is reset to the current
   prediction. Both tests ignore changes of exposure (flicker, fades), which are not cuts.

:func:`warping_error` is the temporal-consistency metric of Lai et al. (ECCV 2018), applied to
ab: the mean distance between a frame's ab and the previous frame's ab warped onto it, over the
pixels where the flow (computed on the ground-truth luminance, with a different flow algorithm,
Farneback, so that the stabiliser is not graded by its own flow) is reliable.

OpenCV is imported lazily (``pip install 'colorgan[video]'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = [
    "DEFAULT_STRENGTH",
    "DEFAULT_SCENE_THRESHOLD",
    "DEFAULT_MIN_RELIABLE",
    "TemporalConfig",
    "StepInfo",
    "TemporalStabilizer",
    "histogram_distance",
    "l_histogram",
    "warping_error",
    "require_cv2",
]

#: Default weight of the warped previous ab where the flow is reliable (``--temporal``).
#: Chosen with ``benchmarks/video_temporal.py``: it halves the warping error or better on the
#: example clip while the mean colourfulness moves by a few per cent (see the README).
DEFAULT_STRENGTH = 0.8

#: Distance (total variation, in [0, 1]) between the standardised L histograms of consecutive
#: frames above which a frame starts a new scene. Measured at render size: within the pans and
#: zooms of ``benchmarks/video_temporal.py`` at most 0.075 (also with strong simulated flicker),
#: at its cuts 0.29-0.53; of 12,246 pairs of different photos of the evaluation set 82 % are
#: above 0.2. The rest (shots of similar tonal shape) are caught by the flow test.
DEFAULT_SCENE_THRESHOLD = 0.2

#: A frame whose flow from the previous one is reliable on less than this fraction of pixels is
#: a cut too. Measured at render size: within shots at least 0.90 (0.75 with +-6 % simulated
#: flicker), mean 0.95; between 300 random pairs of different evaluation photos at most 0.10.
DEFAULT_MIN_RELIABLE = 0.5

_HIST_BINS = 32


def require_cv2() -> Any:
    """Import OpenCV, or raise ImportError naming the extra that provides it."""
    try:
        import cv2
    except ImportError as e:
        raise ImportError(f"video needs OpenCV ({e}); install it with: pip install 'colorgan[video]'") from None
    return cv2


@dataclass(frozen=True)
class TemporalConfig:
    """Settings of :class:`TemporalStabilizer`.

    Attributes:
        strength: weight in [0, 1) of the warped previous ab where the flow is reliable; 0 turns
            stabilisation off (each frame is the network's prediction alone).
        scene_threshold: L-histogram distance in [0, 1] above which a frame starts a new scene.
        min_reliable: a frame whose flow is reliable on less than this fraction of its pixels is
            treated as a cut too (two different shots with similar histograms).
        fb_alpha: relative tolerance of the forward-backward check (Sundaram et al. use 0.01).
        fb_beta: absolute tolerance of the forward-backward check, in pixels squared at render
            size (Sundaram et al. use 0.5).
        photometric_tol: largest |L - warped previous L| (L units, 0-100) of a reliable pixel,
            after matching the previous frame's brightness and contrast to this one's.
        preserve_chroma: blend hue and chroma magnitude separately so that averaging does not
            desaturate (see the module docstring).
    """

    strength: float = DEFAULT_STRENGTH
    scene_threshold: float = DEFAULT_SCENE_THRESHOLD
    min_reliable: float = DEFAULT_MIN_RELIABLE
    fb_alpha: float = 0.01
    fb_beta: float = 0.5
    photometric_tol: float = 6.0
    preserve_chroma: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength < 1.0:
            raise ValueError(f"temporal strength must be in [0, 1), got {self.strength}")
        if not 0.0 < self.scene_threshold <= 1.0:
            raise ValueError(f"scene threshold must be in (0, 1], got {self.scene_threshold}")
        if not 0.0 <= self.min_reliable < 1.0:
            raise ValueError(f"min_reliable must be in [0, 1), got {self.min_reliable}")


@dataclass(frozen=True)
class StepInfo:
    """What :meth:`TemporalStabilizer.step` did with one frame.

    Attributes:
        cut: the frame starts a new scene (the first frame counts), so its ab is the prediction.
        reason: ``'first'``, ``'histogram'``, ``'flow'`` (too few reliable pixels), or ``''``.
        hist_distance: L-histogram distance to the previous frame (0 for the first).
        reliable: fraction of pixels whose flow passed the checks (0 at a cut, NaN when no flow
            was computed because the strength is 0).
    """

    cut: bool
    reason: str
    hist_distance: float
    reliable: float


def l_histogram(L: np.ndarray) -> np.ndarray:
    """Normalised 32-bin histogram of L standardised to zero mean and unit deviation.

    Standardising makes the histogram blind to changes of exposure (the flicker of old film, a
    fade), which are not scene cuts, while a change of picture still changes its shape.

    Args:
        L: ``(h, w)`` L in [0, 100].

    Returns:
        ``(32,)`` float64 summing to 1 (the bins span -3 to 3 deviations; the tails are clipped in).
    """
    L = np.asarray(L, dtype=np.float32)
    z = (L - L.mean()) / max(float(L.std()), 1e-3)
    hist, _ = np.histogram(np.clip(z, -3.0, 3.0), bins=_HIST_BINS, range=(-3.0, 3.0))
    return hist / max(1, hist.sum())


def histogram_distance(h0: np.ndarray, h1: np.ndarray) -> float:
    """Total-variation distance ``0.5 * sum |h0 - h1|`` between two normalised histograms, in [0, 1]."""
    return float(0.5 * np.abs(np.asarray(h0) - np.asarray(h1)).sum())


def _to_u8(L: np.ndarray) -> np.ndarray:
    """L in [0, 100] -> uint8 0-255 (what OpenCV's flow methods take)."""
    return np.clip(np.rint(L * 2.55), 0, 255).astype(np.uint8)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return xs, ys


def _reliable_mask(
    cv2: Any,
    back: np.ndarray,
    fwd: np.ndarray,
    L: np.ndarray,
    L_prev: np.ndarray,
    alpha: float,
    beta: float,
    photometric_tol: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the backward flow (current -> previous) can be trusted.

    Args:
        back: ``(h, w, 2)`` flow from the current frame to the previous one (x, y in pixels).
        fwd: ``(h, w, 2)`` flow from the previous frame to the current one.
        L, L_prev: ``(h, w)`` float32 L of the current and the previous frame, in [0, 100].

    Returns:
        ``(mask, map_x, map_y)``: boolean ``(h, w)`` mask and the float32 sampling maps
        ``x + back_x``, ``y + back_y`` (where each current pixel was in the previous frame).
    """
    h, w = L.shape
    xs, ys = _grid(h, w)
    map_x = xs + back[..., 0]
    map_y = ys + back[..., 1]
    # The forward flow at the point the backward flow lands on should bring us back.
    fwd_w = cv2.remap(fwd, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    loop = back + fwd_w
    lhs = (loop * loop).sum(axis=2)
    rhs = alpha * ((back * back).sum(axis=2) + (fwd_w * fwd_w).sum(axis=2)) + beta
    inside = (map_x >= 0) & (map_x <= w - 1) & (map_y >= 0) & (map_y <= h - 1)
    mask = (lhs <= rhs) & inside
    if np.isfinite(photometric_tol) and mask.any():
        L_w = cv2.remap(L_prev, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        # Old film flickers and shots fade: match the previous frame's brightness and contrast
        # to this one's (over the consistent pixels) before comparing, so that only a change of
        # picture, not of exposure, fails the test.
        a, b = L[mask], L_w[mask]
        gain = float(np.clip(a.std() / max(float(b.std()), 1e-3), 0.5, 2.0))
        offset = float(a.mean()) - gain * float(b.mean())
        mask &= np.abs(L - (gain * L_w + offset)) <= photometric_tol
    return mask, map_x, map_y


class TemporalStabilizer:
    """Stabilise a sequence of render-size ab predictions over time (see the module docstring).

    Call :meth:`step` once per frame, in display order. The state (the previous frame's L and
    stabilised ab) can be saved with :meth:`state_dict` and restored with
    :meth:`load_state_dict`, which is how an interrupted video run resumes with exactly the
    result it would have had.

    Args:
        config: the settings; ``TemporalConfig(strength=0)`` passes predictions through (scene
            cuts are then found by the histogram test alone, and no flow is computed).
    """

    def __init__(self, config: TemporalConfig | None = None) -> None:
        self.config = config or TemporalConfig()
        self._cv2 = require_cv2()
        # DIS (Kroeger et al. 2016): fast, dense, and good at the smooth motion of pans and zooms.
        self._dis = self._cv2.DISOpticalFlow_create(self._cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self.reset()

    def reset(self) -> None:
        """Forget the previous frame (the next frame is treated as the start of a scene)."""
        self._L: np.ndarray | None = None
        self._ab: np.ndarray | None = None
        self._hist: np.ndarray | None = None
        #: Colour guidance ``(3, h, w)`` the previous frame was given (colour points carried
        #: along the shot, see :meth:`carry`), or None.
        self.guide: np.ndarray | None = None

    @property
    def started(self) -> bool:
        """Whether a frame has been seen (the next one continues a shot, unless it is a cut)."""
        return self._L is not None

    def state_dict(self) -> dict[str, np.ndarray]:
        """The state as plain arrays (empty before the first frame)."""
        if self._L is None:
            return {}
        state = {"L": self._L.copy(), "ab": self._ab.copy(), "hist": self._hist.copy()}  # type: ignore[union-attr]
        if self.guide is not None:
            state["guide"] = self.guide.copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore a state saved by :meth:`state_dict` (an empty dict resets)."""
        if not state:
            self.reset()
            return
        self._L = np.ascontiguousarray(state["L"], dtype=np.float32)
        self._ab = np.ascontiguousarray(state["ab"], dtype=np.float32)
        self._hist = np.asarray(state["hist"], dtype=np.float64)
        self.guide = np.ascontiguousarray(state["guide"], dtype=np.float32) if "guide" in state else None

    def carry(self, L: np.ndarray, field: np.ndarray) -> np.ndarray | None:
        """A field of the previous frame moved onto this one along the motion, as colour is.

        Call it before :meth:`step` for this frame. Used for colour guidance given on a shot's
        first frame: the last channel (the confidence) is zeroed where the flow cannot be
        trusted, so a point leaves with what it marked.

        Args:
            L: ``(h, w)`` float32 L in [0, 100] of this frame at render size.
            field: ``(C, h, w)`` float32 of the previous frame.

        Returns:
            ``(C, h, w)`` on this frame, or None at a scene cut (or with no previous frame):
            guidance does not cross a cut.
        """
        cfg, cv2 = self.config, self._cv2
        L = np.ascontiguousarray(L, dtype=np.float32)
        if self._L is None or self._L.shape != L.shape or field.shape[1:] != L.shape:
            return None
        if histogram_distance(l_histogram(L), self._hist) > cfg.scene_threshold:  # type: ignore[arg-type]
            return None
        g, g_prev = _to_u8(L), _to_u8(self._L)
        back = self._dis.calc(g, g_prev, None)
        fwd = self._dis.calc(g_prev, g, None)
        mask, map_x, map_y = _reliable_mask(cv2, back, fwd, L, self._L, cfg.fb_alpha, cfg.fb_beta, cfg.photometric_tol)
        if float(mask.mean()) < cfg.min_reliable:
            return None
        prev = np.ascontiguousarray(field.transpose(1, 2, 0))
        out = cv2.remap(prev, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        out = np.ascontiguousarray(out.reshape(L.shape + (field.shape[0],)).transpose(2, 0, 1), dtype=np.float32)
        out[-1] *= mask
        return out

    def step(self, L: np.ndarray, ab: np.ndarray) -> tuple[np.ndarray, StepInfo]:
        """Stabilise one frame.

        Args:
            L: ``(h, w)`` float32 L in [0, 100] at render size (the size of ``ab``).
            ab: ``(2, h, w)`` float32 ab predicted for this frame, in about [-110, 110].

        Returns:
            ``(ab_out, info)``: ``(2, h, w)`` float32 stabilised ab, and what happened.
        """
        cfg = self.config
        cv2 = self._cv2
        L = np.ascontiguousarray(L, dtype=np.float32)
        ab = np.ascontiguousarray(ab, dtype=np.float32)
        if ab.ndim != 3 or ab.shape[0] != 2 or ab.shape[1:] != L.shape:
            raise ValueError(f"ab must be (2, h, w) with L (h, w), got {ab.shape} and {L.shape}")
        hist = l_histogram(L)
        if self._L is None or self._L.shape != L.shape:
            return self._cut(L, ab, hist, "first", 0.0)
        dist = histogram_distance(hist, self._hist)  # type: ignore[arg-type]
        if dist > cfg.scene_threshold:
            return self._cut(L, ab, hist, "histogram", dist)
        if cfg.strength == 0:
            # Nothing to carry over: skip the flow (cuts are then found by the histogram alone).
            self._L, self._ab, self._hist = L, ab, hist
            return ab, StepInfo(False, "", dist, float("nan"))

        g, g_prev = _to_u8(L), _to_u8(self._L)
        back = self._dis.calc(g, g_prev, None)  # current -> previous
        fwd = self._dis.calc(g_prev, g, None)  # previous -> current
        mask, map_x, map_y = _reliable_mask(cv2, back, fwd, L, self._L, cfg.fb_alpha, cfg.fb_beta, cfg.photometric_tol)
        reliable = float(mask.mean())
        if reliable < cfg.min_reliable:
            return self._cut(L, ab, hist, "flow", dist)

        prev = np.ascontiguousarray(self._ab.transpose(1, 2, 0))  # type: ignore[union-attr]
        warped = cv2.remap(prev, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).transpose(2, 0, 1)
        # A soft mask: hard 0/1 edges would print the mask's outline into the colour.
        weight = cv2.GaussianBlur(mask.astype(np.float32), (5, 5), 0) * np.float32(cfg.strength)
        out = weight * warped + (1.0 - weight) * ab
        if cfg.preserve_chroma:
            target = weight * np.hypot(warped[0], warped[1]) + (1.0 - weight) * np.hypot(ab[0], ab[1])
            norm = np.hypot(out[0], out[1])
            # Where the two hues nearly cancel the direction is noise: do not blow it up.
            scale = np.clip(target / np.maximum(norm, 1e-3), 1.0, 2.0)
            out = out * scale
        out = out.astype(np.float32)
        self._L, self._ab, self._hist = L, out, hist
        return out, StepInfo(False, "", dist, reliable)

    def _cut(self, L: np.ndarray, ab: np.ndarray, hist: np.ndarray, reason: str, dist: float) -> tuple[np.ndarray, StepInfo]:
        self._L, self._ab, self._hist = L, ab, hist
        return ab, StepInfo(True, reason, dist, 0.0)


def warping_error(
    ab_frames: Iterable[np.ndarray],
    L_frames: Iterable[np.ndarray],
    *,
    skip: Sequence[int] = (),
    flows: Sequence[tuple[np.ndarray, np.ndarray] | None] | None = None,
    fb_alpha: float = 0.01,
    fb_beta: float = 0.5,
) -> tuple[float, list[float]]:
    """Temporal warping error of Lai et al. (2018) on ab: lower is more stable.

    For each consecutive pair (t-1, t), frame t-1's ab is warped onto frame t along the motion
    and the error of the pair is ``mean over reliable pixels of ||ab_t - warp(ab_{t-1})||_2`` (a
    chroma distance in ab units; Lai et al. use the squared RGB difference, the ab distance
    isolates what colourisation adds, since L is the input's). The motion is either given
    (``flows``, e.g. the exact camera motion of a synthetic clip) or estimated on the
    ground-truth luminance with OpenCV's Farneback method (a different algorithm from the DIS
    flow the stabiliser uses, so that it is not graded by its own flow), keeping the pixels that
    pass the forward-backward check and stay inside the image.

    Args:
        ab_frames: ``(2, h, w)`` ab per frame (in about [-110, 110]).
        L_frames: ``(h, w)`` ground-truth L per frame, in [0, 100], same size as the ab.
        skip: indices t whose pair (t-1, t) is not counted (the first frame of each new scene).
        flows: optional, per frame t: ``(back, mask)`` with ``back`` the ``(h, w, 2)`` flow from
            frame t to frame t-1 (x, y in pixels) and ``mask`` the ``(h, w)`` pixels to count;
            None entries (and index 0) are estimated.
        fb_alpha, fb_beta: forward-backward tolerances (see :class:`TemporalConfig`).

    Returns:
        ``(mean_error, per_pair_errors)``; the mean is over the counted pairs (NaN if none).
    """
    cv2 = require_cv2()
    skipped = set(int(s) for s in skip)
    errors: list[float] = []
    prev_ab: np.ndarray | None = None
    prev_L: np.ndarray | None = None

    def farneback(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        # Flow from a to b: a(x) ~ b(x + flow(x)). Larger windows, more iterations and the
        # 7-pixel polynomial than OpenCV's example values: on pans and zooms over photographs
        # these cut the metric's own floor (on a field that is consistent by construction) by 3x.
        return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 5, 21, 5, 7, 1.5, 0)

    for t, (ab, L) in enumerate(zip(ab_frames, L_frames)):
        ab = np.asarray(ab, dtype=np.float32)
        L = np.asarray(L, dtype=np.float32)
        if prev_ab is not None and t not in skipped:
            given = flows[t] if flows is not None and t < len(flows) else None
            h, w = L.shape
            xs, ys = _grid(h, w)
            if given is not None:
                back, mask = given
                map_x, map_y = xs + back[..., 0].astype(np.float32), ys + back[..., 1].astype(np.float32)
            else:
                g, g_prev = _to_u8(L), _to_u8(prev_L)  # type: ignore[arg-type]
                back, fwd = farneback(g, g_prev), farneback(g_prev, g)
                # No photometric test here: the metric should judge the colour, not re-check L.
                mask, map_x, map_y = _reliable_mask(cv2, back, fwd, L, prev_L, fb_alpha, fb_beta, np.inf)  # type: ignore[arg-type]
            if mask.any():
                prev = np.ascontiguousarray(prev_ab.transpose(1, 2, 0))
                warped = cv2.remap(prev, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).transpose(2, 0, 1)
                dist = np.hypot(ab[0] - warped[0], ab[1] - warped[1])
                errors.append(float(dist[mask].mean()))
        prev_ab, prev_L = ab, L
    mean = float(np.mean(errors)) if errors else float("nan")
    return mean, errors
