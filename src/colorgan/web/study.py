"""The human-study web page and its HTTP API (FastAPI), over a study folder.

``create_study_router(study_dir)`` gives an :class:`fastapi.APIRouter` that another app can
include; ``create_study_app(study_dir)`` wraps it in a small app of its own (``colorgan study
serve``). Routes:

=======  ==========================================  ==============================================
GET      ``/study``                                  the page (plain HTML/JS/CSS, no CDN)
GET      ``/study/assets/{name}``                    ``study.js``, ``study.css``
GET      ``/api/study/info``                         modes, questions, trial counts, exposure
POST     ``/api/study/sessions``                     start a session: ``{mode?, participant?, seed?}``
                                                     -> 201, the session and its trial list
GET      ``/api/study/sessions/{sid}``               the session's state and trials (to resume)
GET      ``/api/study/sessions/{sid}/next``          ``{done, trial, session}``
POST     ``/api/study/sessions/{sid}/answers``       ``{trial_id, choice: left|right, rt_ms}`` -> 201;
                                                     404 unknown session/trial, 409 answered twice
                                                     or out of order
GET      ``/api/study/images/{item_id}``             one PNG (opaque random id)
GET      ``/api/study/results``                      :func:`colorgan.study.scoring.summarize` (optional)
=======  ==========================================  ==============================================

The server alone knows which image is real: a trial as sent holds two opaque image URLs, and the
answer to a scored trial says nothing about correctness (practice trials return feedback). The
per-answer CSV is deliberately *not* served: it maps image ids to models, which would let a
participant look answers up. Export it with ``colorgan study results --csv``.

Security headers (``nosniff``, no framing, no referrer, the Content-Security-Policy) and the
Host / same-origin checks are not set by these routes: they come from the guard middleware of
the app serving them, :mod:`colorgan.web.app`'s, which :func:`create_study_app` uses too (with
the study page's stricter policy) and :func:`colorgan.web.app.create_app` applies to its
``extra_routers``.

Needs the ``web`` extra: ``pip install 'colorgan[web]'``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Optional

try:
    from fastapi import APIRouter, FastAPI
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
    from pydantic import BaseModel, Field
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise ImportError(f"the study server needs FastAPI: pip install 'colorgan[web]' ({e})") from None

from colorgan.study.db import MAX_PARTICIPANT_LEN, MAX_RT_MS, MODES, QUESTIONS, ConflictError, NotFoundError, StudyDB, StudyError
from colorgan.web.app import _GuardMiddleware  # the Host / Origin guard and security headers of 'colorgan serve'

__all__ = ["STUDY_CSP", "AnswerRequest", "SessionRequest", "create_study_app", "create_study_router"]

STATIC_DIR = Path(__file__).resolve().parent / "static" / "study"
_ASSETS = {"study.js": "text/javascript; charset=utf-8", "study.css": "text/css; charset=utf-8"}
_API = "/api/study"
# The study page's policy, stricter than the main page's (which also allows blob:/data: images
# and forms): no inline script or style, nothing from elsewhere, so the page works offline and an
# injected string could not run.
STUDY_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_NO_STORE = {"Cache-Control": "no-store"}


class SessionRequest(BaseModel):
    """Body of ``POST /api/study/sessions``.

    Attributes:
        mode: ``"real"`` or ``"natural"``; default: the first mode the server runs.
        participant: a label shared by one participant's sessions; default: anonymous.
        seed: the plan's seed, for reproducible sessions; default: random.
    """

    mode: Optional[Literal["real", "natural"]] = None
    participant: Optional[str] = Field(default=None, max_length=MAX_PARTICIPANT_LEN)
    seed: Optional[int] = Field(default=None, ge=0, lt=2**63)


class AnswerRequest(BaseModel):
    """Body of ``POST /api/study/sessions/{sid}/answers``.

    Attributes:
        trial_id: the trial answered (the session's next one).
        choice: the image picked, ``"left"`` or ``"right"``.
        rt_ms: milliseconds from both images showing to the answer, measured by the page.
    """

    trial_id: int
    choice: Literal["left", "right"]
    rt_ms: Optional[float] = Field(default=None, ge=0, le=MAX_RT_MS)


def _error(e: StudyError) -> JSONResponse:
    status = 404 if isinstance(e, NotFoundError) else 409 if isinstance(e, ConflictError) else 400
    return JSONResponse({"detail": str(e)}, status_code=status, headers=_NO_STORE)


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers=_NO_STORE)


def _client_trial(t: dict[str, Any]) -> dict[str, Any]:
    # Only what the page needs; item ids are opaque, so nothing here tells real from fake.
    return {
        "id": t["id"],
        "position": t["position"],
        "practice": t["practice"],
        "left": f"{_API}/images/{t['left']}",
        "right": f"{_API}/images/{t['right']}",
        "answered": t["answered"],
    }


def create_study_router(
    study_dir: str | os.PathLike,
    *,
    modes: Sequence[str] = MODES,
    exposure_ms: int = 0,
    results_api: bool = True,
) -> APIRouter:
    """The study page and API over one study folder.

    Args:
        study_dir: a folder made by ``colorgan study prepare``.
        modes: the modes sessions may use; the first is the page's (``("real",)`` runs only the
            "which is real?" study).
        exposure_ms: how long the page shows each pair before hiding it (0: until answered;
            the colourisation Turing test of Zhang et al. 2016 used 1000).
        results_api: serve ``GET /api/study/results`` (aggregate numbers only); False keeps
            participants from seeing the running results.

    Returns:
        A router with the routes listed in this module's docstring (absolute paths, no prefix).

    Raises:
        StudyError: not a study folder, an unknown mode, or the page's files are missing.
    """
    db = StudyDB(study_dir)
    modes = tuple(modes)
    if not modes or any(m not in MODES for m in modes) or len(set(modes)) != len(modes):
        raise StudyError(f"modes must be distinct values among {', '.join(MODES)}, got {modes!r}")
    if not isinstance(exposure_ms, int) or exposure_ms < 0:
        raise StudyError(f"exposure_ms must be a non-negative integer, got {exposure_ms!r}")
    try:
        page = (STATIC_DIR / "study.html").read_text(encoding="utf-8")
        assets = {name: (STATIC_DIR / name).read_bytes() for name in _ASSETS}
    except OSError as e:
        raise StudyError(f"the study page's files are missing from {STATIC_DIR} ({e.strerror or e})") from None
    info = {
        "study_id": str(db.manifest.get("study_id", "")),
        "modes": list(modes),
        "default_mode": modes[0],
        "questions": {m: QUESTIONS[m] for m in modes},
        "n_trials": int(db.manifest.get("n_photos", 0)),
        "n_practice": int(db.manifest.get("n_practice", 0)),
        "exposure_ms": exposure_ms,
    }
    router = APIRouter()

    @router.get("/study", response_class=HTMLResponse, include_in_schema=False)
    def study_page() -> Response:
        return HTMLResponse(page, headers=_NO_STORE)

    @router.get("/study/assets/{name}", include_in_schema=False)
    def study_asset(name: str) -> Response:
        if name not in assets:  # a fixed list: no path from the URL ever reaches the file system
            return _json({"detail": f"no asset {name!r}"}, 404)
        return Response(assets[name], media_type=_ASSETS[name], headers={"Cache-Control": "no-cache"})

    @router.get(f"{_API}/info")
    def study_info() -> JSONResponse:
        return _json(info)

    @router.post(f"{_API}/sessions", status_code=201)
    def create_session(body: SessionRequest) -> JSONResponse:
        mode = body.mode or modes[0]
        if mode not in modes:
            return _json({"detail": f"this server runs the {' and '.join(modes)} study, not {mode!r}"}, 400)
        try:
            s = db.create_session(mode, body.participant, seed=body.seed, exposure_ms=exposure_ms)
        except StudyError as e:
            return _error(e)
        s["trials"] = [_client_trial(t) for t in s["trials"]]
        return _json(s, 201)

    @router.get(f"{_API}/sessions/{{session_id}}")
    def get_session(session_id: str) -> JSONResponse:
        try:
            s = db.session(session_id)
            s["trials"] = [_client_trial(t) for t in db.trials(session_id)]
        except StudyError as e:
            return _error(e)
        return _json(s)

    @router.get(f"{_API}/sessions/{{session_id}}/next")
    def next_trial(session_id: str) -> JSONResponse:
        try:
            t = db.next_trial(session_id)
            s = db.session(session_id)
        except StudyError as e:
            return _error(e)
        return _json({"done": t is None, "trial": None if t is None else _client_trial(t), "session": s})

    @router.post(f"{_API}/sessions/{{session_id}}/answers", status_code=201)
    def answer(session_id: str, body: AnswerRequest) -> JSONResponse:
        try:
            r = db.record_answer(session_id, body.trial_id, body.choice, body.rt_ms)
        except StudyError as e:
            return _error(e)
        return _json(r, 201)

    @router.get(f"{_API}/images/{{item_id}}")
    def image(item_id: str) -> Response:
        try:
            path = db.image_path(item_id)
        except StudyError as e:
            return _error(e)
        return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})

    if results_api:

        @router.get(f"{_API}/results")
        def results() -> JSONResponse:
            from colorgan.study.scoring import summarize

            return _json(summarize(db))

    return router


def create_study_app(
    study_dir: str | os.PathLike,
    *,
    modes: Sequence[str] = MODES,
    exposure_ms: int = 0,
    results_api: bool = True,
    allowed_hosts: Sequence[str] | None = None,
) -> FastAPI:
    """A FastAPI app serving only the study (``/`` redirects to ``/study``).

    It is guarded like ``colorgan serve``'s app (the same middleware): a Host header not in
    ``allowed_hosts`` gets 400, a cross-origin POST (an ``Origin`` that is not this server) gets
    403, and every response carries the security headers, the page :data:`STUDY_CSP`.

    Args:
        study_dir, modes, exposure_ms, results_api: see :func:`create_study_router`.
        allowed_hosts: Host header values accepted, without port (None: any). A server bound
            to loopback should pass the loopback names, which defeats DNS rebinding from other
            web pages.

    Raises:
        StudyError: see :func:`create_study_router`.
    """
    router = create_study_router(study_dir, modes=modes, exposure_ms=exposure_ms, results_api=results_api)
    # No /docs or /redoc: FastAPI's documentation pages load their scripts from a CDN.
    app = FastAPI(title="ColorGAN human study", docs_url=None, redoc_url=None)
    hosts = None if allowed_hosts is None else frozenset(h.lower().strip("[]") for h in allowed_hosts)
    app.add_middleware(_GuardMiddleware, allowed_hosts=hosts, csp=STUDY_CSP)
    app.include_router(router)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/study", status_code=307)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)  # no icon, and no 404 in the browser console

    return app
