"""Colour guidance: colour points a person gives, read, checked and turned into the generator's input.

A colour point is a pixel position in the original image (as it is shown, after EXIF orientation;
origin top-left) and an sRGB colour; the generator sees guidance as ``(B, 3, h, w)``
``[a / 110, b / 110, confidence]`` at the render size (:class:`colorgan.models.generator.GuidanceBranch`).
Only the point's chroma is used: its lightness is the photo's own.

The hints file format (JSON)::

    {"points": [{"x": 120, "y": 45, "color": "#a03020"}, {"x": 300, "y": 80, "color": "#3060c0", "radius": 12}]}

``x`` and ``y`` are pixels (numbers, not necessarily whole); ``color`` is ``#rrggbb`` (or
``#rgb``); ``radius`` (optional, pixels of the original, > 0) is the size of the patch the colour
covers; without it a point covers :data:`DEFAULT_RADIUS_RENDER` pixels of the render.

Training and evaluation simulate points from a true colour photo (:func:`simulate_points`) as
Zhang et al. 2017 did: a random number of small patches of the true colour at random places.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from colorgan.errors import ColorGANError

__all__ = [
    "rgb_hex",
    "ColourPoint",
    "HintsError",
    "parse_hints",
    "check_points",
    "load_hints",
    "points_to_json",
    "rasterize_points",
    "simulate_points",
    "simulate_dense",
    "DEFAULT_RADIUS_RENDER",
]

#: A point without a radius covers a disc of this radius in pixels of the render (about a 5 x 5
#: patch at render 256, the middle of the 1-9 px patches the generator is trained with).
DEFAULT_RADIUS_RENDER = 2.0

_HEX = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")


class HintsError(ColorGANError):
    """A hints file or value that cannot be used; the message names the file and the point."""


@dataclass(frozen=True)
class ColourPoint:
    """One colour point.

    Attributes:
        x, y: position in pixels of the image as shown (origin top-left, x to the right).
        rgb: the sRGB colour, each channel in [0, 1].
        radius: the patch's radius in pixels of the image, or None for the default.
    """

    x: float
    y: float
    rgb: tuple[float, float, float]
    radius: float | None = None

    @property
    def hex(self) -> str:
        return rgb_hex(self.rgb)


def rgb_hex(rgb: Sequence[float]) -> str:
    """``#rrggbb`` of an sRGB colour with channels in [0, 1] (the hints files' colour format)."""
    return "#" + "".join(f"{round(float(c) * 255):02x}" for c in rgb)


def _parse_colour(value: Any, where: str) -> tuple[float, float, float]:
    if not isinstance(value, str) or not _HEX.match(value.strip()):
        raise HintsError(f"{where}: colour must be '#rrggbb', got {value!r}")
    h = value.strip()[1:]
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    return tuple(int(h[i : i + 2], 16) / 255.0 for i in (0, 2, 4))  # type: ignore[return-value]


def _number(value: Any, what: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise HintsError(f"{where}: {what} must be a finite number, got {value!r}")
    return float(value)


def parse_hints(data: Any, *, source: str = "hints", size: tuple[int, int] | None = None) -> list[ColourPoint]:
    """Check a hints object (``{"points": [...]}``, or the list of points alone) and read its points.

    Args:
        data: the decoded JSON.
        source: how errors name it (the file).
        size: ``(height, width)`` of the image the points are for: a point outside it is an error.

    Raises:
        HintsError: a bad structure, a bad number or colour, or a point outside the image; the
            message names the source and the point (``points[3]``).
    """
    points = data.get("points") if isinstance(data, dict) else data
    if isinstance(data, dict):
        unknown = set(data) - {"points"}
        if unknown:
            raise HintsError(f"{source}: unknown keys {sorted(unknown)} (expected {{\"points\": [...]}})")
    if not isinstance(points, list):
        raise HintsError(f"{source}: expected {{\"points\": [{{\"x\": ..., \"y\": ..., \"color\": \"#rrggbb\"}}, ...]}}")
    out: list[ColourPoint] = []
    for i, p in enumerate(points):
        where = f"{source}: points[{i}]"
        if not isinstance(p, dict):
            raise HintsError(f"{where}: a point must be an object with x, y and color")
        unknown = set(p) - {"x", "y", "color", "radius"}
        missing = {"x", "y", "color"} - set(p)
        if missing or unknown:
            raise HintsError(f"{where}: " + (f"missing {sorted(missing)}" if missing else f"unknown keys {sorted(unknown)}"))
        x, y = _number(p["x"], "x", where), _number(p["y"], "y", where)
        radius = None
        if p.get("radius") is not None:
            radius = _number(p["radius"], "radius", where)
            if radius <= 0:
                raise HintsError(f"{where}: radius must be > 0, got {radius:g}")
        out.append(ColourPoint(x, y, _parse_colour(p["color"], where), radius))
    return out if size is None else check_points(out, size, source)


def check_points(points: Sequence[ColourPoint], size: tuple[int, int], source: str = "hints") -> list[ColourPoint]:
    """The points, each checked to lie inside an image of ``size = (height, width)``.

    Raises:
        HintsError: a point outside the image (the message names the source and the point).
    """
    h, w = size
    for i, p in enumerate(points):
        if not (0 <= p.x < w and 0 <= p.y < h):
            raise HintsError(f"{source}: points[{i}]: ({p.x:g}, {p.y:g}) is outside the {w} x {h} image")
    return list(points)


def load_hints(path: str | os.PathLike, *, size: tuple[int, int] | None = None) -> list[ColourPoint]:
    """Read and check a hints JSON file (see :func:`parse_hints`).

    Raises:
        HintsError: unreadable, not JSON, or not valid hints (the message names the file).
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HintsError(f"{p}: no such hints file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise HintsError(f"{p}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise HintsError(f"{p}: not valid JSON ({e.msg} at line {e.lineno})") from None
    return parse_hints(data, source=str(p), size=size)


def points_to_json(points: Sequence[ColourPoint]) -> dict[str, Any]:
    """The JSON object of :func:`parse_hints` for these points (what the web page downloads)."""
    out = []
    for p in points:
        d: dict[str, Any] = {"x": p.x, "y": p.y, "color": p.hex}
        if p.radius is not None:
            d["radius"] = p.radius
        out.append(d)
    return {"points": out}


def rasterize_points(
    points: Sequence[ColourPoint], image_size: tuple[int, int], render_size: tuple[int, int], *, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """The guidance the generator sees for these points.

    Each point paints a disc of its colour's ab at the render size (positions and radii scaled
    from the image to the render; at least the pixel it falls in); where discs overlap, the
    later point wins.

    Args:
        points: the colour points, in image pixels.
        image_size: ``(H, W)`` of the image they are given in.
        render_size: ``(h, w)`` the network sees.

    Returns:
        ``(1, 3, h, w)`` float32 ``[a / 110, b / 110, confidence (0 or 1)]``.
    """
    from colorgan import color

    H, W = image_size
    h, w = render_size
    guide = torch.zeros(1, 3, h, w, device=device)
    if not points:
        return guide
    rgb = torch.tensor([p.rgb for p in points], dtype=torch.float32).T.reshape(1, 3, 1, len(points))
    ab = color.rgb_to_lab(rgb)[0, 1:, 0].to(device) / 110.0  # (2, N)
    sy, sx = h / H, w / W
    yy = torch.arange(h, device=device, dtype=torch.float32)[:, None] + 0.5
    xx = torch.arange(w, device=device, dtype=torch.float32)[None, :] + 0.5
    for i, p in enumerate(points):
        cy, cx = (p.y + 0.5) * sy, (p.x + 0.5) * sx
        r = DEFAULT_RADIUS_RENDER if p.radius is None else p.radius * (sx + sy) / 2
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= max(r, 0.5) ** 2
        iy, ix = min(h - 1, int(cy)), min(w - 1, int(cx))
        disc[iy, ix] = True  # a point always marks the pixel it falls in
        guide[0, 0][disc] = ab[0, i]
        guide[0, 1][disc] = ab[1, i]
        guide[0, 2][disc] = 1.0
    return guide


def simulate_points(
    ab_norm: torch.Tensor, counts: Sequence[int], generator: torch.Generator, *, min_size: int = 1, max_size: int = 9
) -> torch.Tensor:
    """Colour points sampled from the truth, as a person's clicks are simulated in training.

    Each point is a square patch of side uniform in [min_size, max_size] pixels at a uniformly
    random place, holding the patch's mean true ab (Zhang et al. 2017).

    Args:
        ab_norm: ``(B, 2, H, W)`` true ab / 110.
        counts: points per image (0: none).
        generator: the random source (seeded by the caller: a pure function of the step).

    Returns:
        ``(B, 3, H, W)`` guidance ``[a, b, confidence]`` on ``ab_norm``'s device.
    """
    B, _, H, W = ab_norm.shape
    guide = torch.zeros(B, 3, H, W, device=ab_norm.device, dtype=ab_norm.dtype)
    for b, n in enumerate(counts):
        for _ in range(int(n)):
            s = int(torch.randint(min_size, max_size + 1, (1,), generator=generator))
            s = min(s, H, W)
            y = int(torch.randint(0, H - s + 1, (1,), generator=generator))
            x = int(torch.randint(0, W - s + 1, (1,), generator=generator))
            patch = ab_norm[b, :, y : y + s, x : x + s]
            guide[b, :2, y : y + s, x : x + s] = patch.mean((1, 2), keepdim=True)
            guide[b, 2, y : y + s, x : x + s] = 1.0
    return guide


def simulate_dense(ab_norm: torch.Tensor, generator: torch.Generator, *, cells: Sequence[int] = (4, 8, 16)) -> torch.Tensor:
    """Dense guidance sampled from the truth, as a reference photo's correspondence would give it.

    Per image: the true ab averaged over cells of a random size (a coarse colour map), each cell
    kept with a random probability and a random confidence in [0.2, 1]; the rest unknown.

    Args:
        ab_norm: ``(B, 2, H, W)`` true ab / 110 (H, W multiples of the largest cell).
        generator: the random source.

    Returns:
        ``(B, 3, H, W)`` guidance ``[a, b, confidence]``.
    """
    import torch.nn.functional as F

    B, _, H, W = ab_norm.shape
    out = []
    for b in range(B):
        k = int(cells[int(torch.randint(0, len(cells), (1,), generator=generator))])
        k = max(1, min(k, H, W))
        coarse = F.avg_pool2d(ab_norm[b : b + 1].float(), k, ceil_mode=True)
        keep = float(torch.rand((), generator=generator)) * 0.8 + 0.1
        conf = (torch.rand(coarse.shape[-2:], generator=generator) < keep).float() * (0.2 + 0.8 * torch.rand(coarse.shape[-2:], generator=generator))
        conf = conf.to(ab_norm.device)[None, None]
        g = torch.cat([coarse * (conf > 0), conf], dim=1)
        out.append(F.interpolate(g, scale_factor=k, mode="nearest")[..., :H, :W])
    return torch.cat(out).to(ab_norm.dtype)

