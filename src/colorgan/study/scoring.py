"""Scoring a study: fooling rates and preferences with Wilson 95% intervals, and CSV export.

* ``real`` mode ("which photo is the real one?"): a model's **fooling rate** is the fraction of
  its trials in which the participant picked the colourisation as the real photo (the
  "colourisation Turing test" of Zhang, Isola and Efros, ECCV 2016). 50% means participants could
  not tell it from real photos; 0% means they always could.
* ``natural`` mode ("which looks more natural?"): for each pair of candidates shown together
  (a model against the real photo, or two models), the fraction of trials in which the first was
  preferred; and for each candidate its win rate over all its comparisons.

Practice trials are never counted. Confidence intervals are Wilson score intervals (Wilson
1927; Newcombe 1998 recommends it over the normal approximation, which fails near 0 and 1 and
for small n). They treat trials as independent binomial draws; repeated trials of the same
participant or photo are correlated, so the true uncertainty is somewhat larger: report the
number of participants with them.
"""

from __future__ import annotations

import csv
import io
import math
import os
import statistics
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from colorgan.study.db import QUESTIONS, REAL_LABEL, StudyDB, StudyError

__all__ = ["CI_METHOD", "CSV_COLUMNS", "csv_text", "format_summary", "summarize", "wilson_interval", "write_csv"]

CI_METHOD = "Wilson score interval, 95%, trials treated as independent"

#: Columns of :func:`write_csv`, one row per answer (practice answers too, flagged).
CSV_COLUMNS = (
    "session",
    "participant",
    "mode",
    "trial",
    "position",
    "practice",
    "photo",
    "left_item",
    "right_item",
    "left_model",
    "right_model",
    "choice",
    "chosen_model",
    "correct",
    "rt_ms",
    "answered_at",
)


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``k / n``.

    ``(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)`` with ``z`` the two-sided normal
    quantile of ``confidence`` (1.959964 for 95%). Unlike the normal ("Wald") interval it stays
    inside [0, 1] and is not degenerate at ``k = 0`` or ``k = n``.

    Args:
        k: successes, ``0 <= k <= n``.
        n: trials, ``n >= 1``.
        confidence: coverage in (0, 1).

    Returns:
        ``(lower, upper)``, both in [0, 1]; exactly 0 when ``k = 0`` and 1 when ``k = n``.

    Raises:
        ValueError: ``n < 1``, ``k`` outside ``[0, n]``, or ``confidence`` outside (0, 1).

    Example:
        >>> [round(x, 4) for x in wilson_interval(5, 10)]
        [0.2366, 0.7634]
    """
    if isinstance(k, bool) or isinstance(n, bool) or int(k) != k or int(n) != n:
        raise ValueError(f"k and n must be integers, got k={k!r}, n={n!r}")
    k, n = int(k), int(n)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"k must be in [0, n={n}], got {k}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2.0)
    p = k / n
    z2n = z * z / n
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n)) / (1.0 + z2n)
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def _proportion(k: int, n: int) -> dict[str, Any]:
    if n == 0:
        return {"rate": None, "ci95": None}
    lo, hi = wilson_interval(k, n)
    return {"rate": k / n, "ci95": [lo, hi]}


def _median(values: Sequence[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _scored_rows(db: StudyDB, complete_only: bool) -> dict[str, list[dict[str, Any]]]:
    """The scored (non-practice) answers by mode, read from the database once."""
    finished = {s["id"] for s in db.session_rows() if s["finished"] is not None}
    by_mode: dict[str, list[dict[str, Any]]] = {"real": [], "natural": []}
    for r in db.answer_rows():
        if not r["practice"] and (not complete_only or r["session"] in finished):
            by_mode.setdefault(r["mode"], []).append(r)
    return by_mode


def _counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {
        "trials": len(rows),
        "sessions": len({r["session"] for r in rows}),
        "participants": len({r["participant"] for r in rows}),
    }


def _summarize_real(db: StudyDB, rows: list[dict[str, Any]]) -> dict[str, Any]:
    per: dict[str, list[dict[str, Any]]] = {m: [] for m in db.models}
    for r in rows:
        fake = r["right_model"] if r["left_real"] else r["left_model"]
        per.setdefault(fake, []).append(r)

    def entry(label: str, rs: list[dict[str, Any]]) -> dict[str, Any]:
        fooled = sum(1 for r in rs if r["correct"] == 0)
        return {"model": label, **_counts(rs), "fooled": fooled, **_proportion(fooled, len(rs)), "median_rt_ms": _median([r["rt_ms"] for r in rs])}

    return {
        "question": QUESTIONS["real"],
        **_counts(rows),
        "models": [entry(m, rs) for m, rs in per.items()],
        "pooled": entry("all models", rows),
    }


def _summarize_natural(db: StudyDB, rows: list[dict[str, Any]]) -> dict[str, Any]:
    cands = list(db.models) + [REAL_LABEL]
    rank = {c: i for i, c in enumerate(cands)}
    pairs: dict[tuple[str, str], list[int]] = {}  # (a, b) -> [a preferred, trials]
    for a in range(len(cands)):
        for b in range(a + 1, len(cands)):
            pairs[(cands[a], cands[b])] = [0, 0]
    wins = {c: [0, 0] for c in cands}  # candidate -> [wins, comparisons]
    for r in rows:
        a, b = sorted((r["left_model"], r["right_model"]), key=lambda m: rank.get(m, len(rank)))
        cell = pairs.setdefault((a, b), [0, 0])
        cell[1] += 1
        cell[0] += int(r["chosen_model"] == a)
        for c in (a, b):
            w = wins.setdefault(c, [0, 0])
            w[1] += 1
            w[0] += int(r["chosen_model"] == c)
    return {
        "question": QUESTIONS["natural"],
        **_counts(rows),
        "pairs": [
            {"a": a, "b": b, "trials": n, "a_preferred": k, **_proportion(k, n)} for (a, b), (k, n) in pairs.items()
        ],
        "candidates": [{"model": c, "comparisons": n, "wins": k, **_proportion(k, n)} for c, (k, n) in wins.items()],
    }


def summarize(study: StudyDB | str | os.PathLike, *, complete_only: bool = False) -> dict[str, Any]:
    """The results of a study, practice trials excluded.

    Args:
        study: a :class:`StudyDB` or a study folder.
        complete_only: count only sessions whose every trial is answered.

    Returns:
        ``{"study": {...}, "ci_method", "complete_only", "real": {...}, "natural": {...}}``.
        ``real`` has ``trials, sessions, participants``, ``models``: one entry per model with
        ``trials, fooled, rate`` (fooling rate), ``ci95 [lo, hi]``, ``median_rt_ms``, and
        ``pooled``: the same over all models. ``natural`` has ``pairs``: ``{a, b, trials,
        a_preferred, rate, ci95}`` (``rate`` = preference for ``a``; pairs with the real photo
        have it as ``b``) and ``candidates``: ``{model, comparisons, wins, rate, ci95}``.
        ``rate`` and ``ci95`` are None without trials.
    """
    db = study if isinstance(study, StudyDB) else StudyDB(study)
    rows = _scored_rows(db, complete_only)
    return {
        "study": {
            "dir": str(db.dir),
            "models": list(db.models),
            "n_photos": db.manifest.get("n_photos"),
            "n_practice": db.manifest.get("n_practice"),
            "created": db.manifest.get("created"),
        },
        "ci_method": CI_METHOD,
        "complete_only": complete_only,
        "real": _summarize_real(db, rows["real"]),
        "natural": _summarize_natural(db, rows["natural"]),
    }


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ci(ci: Sequence[float] | None) -> str:
    return "-" if ci is None else f"[{100 * ci[0]:.1f}%, {100 * ci[1]:.1f}%]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return [fmt(header), *(fmt(r) for r in rows)]


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text report of :func:`summarize` (for the terminal)."""
    st = summary["study"]
    lines = [
        f"Study {st['dir']}: {st['n_photos']} photos, {st['n_practice']} practice, models: {', '.join(st['models'])}",
        f"Practice trials excluded; intervals: {summary['ci_method']}"
        + ("; complete sessions only" if summary.get("complete_only") else ""),
    ]
    real = summary["real"]
    lines += ["", f"Mode real ({real['question']}): {_n(real['trials'], 'trial')}, {_n(real['participants'], 'participant')}, {_n(real['sessions'], 'session')}"]
    if real["trials"]:
        rows = [
            [m["model"], str(m["trials"]), str(m["fooled"]), _pct(m["rate"]), _ci(m["ci95"])]
            for m in [*real["models"], real["pooled"]]
        ]
        lines += ["  " + x for x in _table(["model", "trials", "fooled", "fooling rate", "95% CI"], rows)]
        lines.append("  fooling rate: how often the colourisation was taken for the real photo (50% = indistinguishable)")
    nat = summary["natural"]
    lines += ["", f"Mode natural ({nat['question']}): {_n(nat['trials'], 'trial')}, {_n(nat['participants'], 'participant')}, {_n(nat['sessions'], 'session')}"]
    if nat["trials"]:
        rows = [[f"{p['a']} vs {p['b']}", str(p["trials"]), str(p["a_preferred"]), _pct(p["rate"]), _ci(p["ci95"])] for p in nat["pairs"]]
        lines += ["  " + x for x in _table(["pair (A vs B)", "trials", "A chosen", "A preferred", "95% CI"], rows)]
        rows = [[c["model"], str(c["comparisons"]), str(c["wins"]), _pct(c["rate"]), _ci(c["ci95"])] for c in nat["candidates"]]
        lines += [""] + ["  " + x for x in _table(["candidate", "comparisons", "wins", "win rate", "95% CI"], rows)]
    return "\n".join(lines) + "\n"


def _iso(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


def csv_text(study: StudyDB | str | os.PathLike) -> tuple[str, int]:
    """Every answer as CSV text (columns :data:`CSV_COLUMNS`); returns ``(text, number of rows)``."""
    db = study if isinstance(study, StudyDB) else StudyDB(study)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    rows = db.answer_rows()
    for r in rows:
        w.writerow(
            [
                r["session"],
                r["participant"],
                r["mode"],
                r["trial"],
                r["position"],
                int(r["practice"]),
                r["photo"],
                r["left_item"],
                r["right_item"],
                r["left_model"],
                r["right_model"],
                r["choice"],
                r["chosen_model"],
                "" if r["correct"] is None else r["correct"],
                "" if r["rt_ms"] is None else f"{r['rt_ms']:.1f}",
                _iso(r["answered"]),
            ]
        )
    return buf.getvalue(), len(rows)


def write_csv(study: StudyDB | str | os.PathLike, path: str | os.PathLike) -> int:
    """Write every answer (practice ones flagged) to ``path`` atomically; returns the row count.

    ``correct`` is 1 when the real photo was picked (``real`` mode), empty in ``natural`` mode;
    ``answered_at`` is an ISO 8601 UTC time.

    Raises:
        StudyError: ``path`` is the study database, or cannot be written.
    """
    db = study if isinstance(study, StudyDB) else StudyDB(study)
    path = Path(path)
    if path.exists() and path.resolve() == db.path.resolve():
        raise StudyError(f"{path}: refusing to write the CSV over the study database")
    text, n = csv_text(db)
    from colorgan import io as cio
    from colorgan.errors import OutputError

    try:
        cio.atomic_write(path, text.encode("utf-8"))  # a reader never sees half a CSV
    except OutputError as e:
        raise StudyError(f"{path}: cannot write ({e.reason})") from None
    return n
