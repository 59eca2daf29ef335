"""The study database: schema, trial planning, sessions and answers (stdlib ``sqlite3``).

A study folder holds ``study.sqlite`` and ``images/``. The tables:

* ``manifest(key, value)``: how the study was made (JSON values: models, sizes, seed, ...);
* ``photos(id, source, practice)``: the ground-truth photos; practice photos are separate;
* ``items(id, photo_id, model, is_real, file)``: one displayed image each: the photo itself
  (``model = 'ground truth'``, ``is_real = 1``) or one model's colourisation of it. ``id`` is a
  random token that is also the file name, so a URL says nothing about what it shows;
* ``sessions(id, mode, participant, seed, rotation, exposure_ms, created, finished)``;
* ``trials(id, session_id, position, practice, left_item, right_item)``: a session's plan,
  made and stored when the session starts;
* ``answers(trial_id, choice, rt_ms, answered)``: at most one per trial.

Correctness is never stored: it is derived from ``items.is_real`` when scoring, so there is one
source of truth, and the client is only ever told it for practice trials.

Concurrency: every operation opens its own connection (connections are not shared between
threads) on a database in WAL mode, and every write runs in a ``BEGIN IMMEDIATE`` transaction, so
concurrent writers are serialised by SQLite itself (with a busy timeout) and a read never sees
half a session.
"""

from __future__ import annotations

import json
import random
import re
import secrets
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from colorgan.errors import ColorGANError

__all__ = [
    "DB_NAME",
    "IMAGES_DIR",
    "MODES",
    "QUESTIONS",
    "REAL_LABEL",
    "SCHEMA_VERSION",
    "ConflictError",
    "NotFoundError",
    "PlannedTrial",
    "StudyDB",
    "StudyError",
    "create_database",
    "plan_trials",
]

DB_NAME = "study.sqlite"
IMAGES_DIR = "images"
SCHEMA_VERSION = 1
#: The ``model`` of an item that is the real photo.
REAL_LABEL = "ground truth"
#: ``real``: which of the two is the real photo (the colourisation Turing test of Zhang et al.,
#: ECCV 2016); ``natural``: which looks more natural (a preference, no right answer).
MODES = ("real", "natural")
QUESTIONS = {"real": "Which photo is the real one?", "natural": "Which photo looks more natural?"}
MAX_PARTICIPANT_LEN = 64
#: Response times outside [0, MAX_RT_MS] are refused: a client clock gone wrong, not a slow participant.
MAX_RT_MS = 24 * 3600 * 1000.0

_ITEM_ID = re.compile(r"^[0-9a-f]{32}$")
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_BUSY_TIMEOUT_MS = 10_000

_SCHEMA = f"""
CREATE TABLE manifest (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE photos (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    practice INTEGER NOT NULL CHECK (practice IN (0, 1))
);
CREATE TABLE items (
    id TEXT PRIMARY KEY,
    photo_id INTEGER NOT NULL REFERENCES photos(id),
    model TEXT NOT NULL,
    is_real INTEGER NOT NULL CHECK (is_real IN (0, 1)),
    file TEXT NOT NULL UNIQUE,
    CHECK ((is_real = 1) = (model = '{REAL_LABEL}')),
    UNIQUE (photo_id, model)
);
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    mode TEXT NOT NULL CHECK (mode IN ('real', 'natural')),
    participant TEXT NOT NULL,
    seed INTEGER NOT NULL,
    rotation INTEGER NOT NULL,
    exposure_ms INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    finished REAL
);
CREATE TABLE trials (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    position INTEGER NOT NULL,
    practice INTEGER NOT NULL CHECK (practice IN (0, 1)),
    left_item TEXT NOT NULL REFERENCES items(id),
    right_item TEXT NOT NULL REFERENCES items(id),
    UNIQUE (session_id, position)
);
CREATE TABLE answers (
    trial_id INTEGER PRIMARY KEY REFERENCES trials(id),
    choice TEXT NOT NULL CHECK (choice IN ('left', 'right')),
    rt_ms REAL,
    answered REAL NOT NULL
);
CREATE INDEX trials_by_session ON trials(session_id, position);
"""


class StudyError(ColorGANError):
    """A study folder is missing or invalid, or a request to it is malformed."""


class NotFoundError(StudyError):
    """An unknown session, trial or image (HTTP 404)."""


class ConflictError(StudyError):
    """A trial answered twice or out of order (HTTP 409)."""


@dataclass(frozen=True)
class PlannedTrial:
    """One trial of a session plan: which two items, in which sides.

    Attributes:
        practice: a practice trial (shown first, answered with feedback, never scored).
        left: item id shown on the left.
        right: item id shown on the right.
    """

    practice: bool
    left: str
    right: str


def new_item_id() -> str:
    """A random 128-bit item id (hex): unguessable, and says nothing about the image."""
    return secrets.token_hex(16)


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE), not sqlite3's implicit ones.
    con = sqlite3.connect(str(path), timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    con.row_factory = sqlite3.Row
    con.execute("PRAGMA foreign_keys = ON")
    con.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    return con


def create_database(
    path: str | Path,
    manifest: dict[str, Any],
    photos: Sequence[tuple[int, str, bool]],
    items: Sequence[tuple[str, int, str, str]],
) -> None:
    """Write a new study database at ``path`` (which must not exist) in WAL mode, in one transaction.

    Args:
        path: the new database file.
        manifest: values stored in the ``manifest`` table (each JSON-encoded); ``schema`` is added.
        photos: ``(photo_id, source, practice)`` for each photo.
        items: ``(item_id, photo_id, model, file)`` for each image; ``model`` is
            :data:`REAL_LABEL` for the photo itself.

    Raises:
        StudyError: ``path`` exists.
    """
    path = Path(path)
    if path.exists():
        raise StudyError(f"{path}: already exists")
    con = _connect(path)
    try:
        # WAL lets readers (results, next trial) run while an answer is written; the mode is
        # stored in the file, so every later connection gets it too.
        con.execute("PRAGMA journal_mode = WAL")
        con.executescript(_SCHEMA)
        con.execute("BEGIN IMMEDIATE")
        rows = {**manifest, "schema": SCHEMA_VERSION}
        con.executemany("INSERT INTO manifest (key, value) VALUES (?, ?)", [(k, json.dumps(v)) for k, v in rows.items()])
        con.executemany("INSERT INTO photos (id, source, practice) VALUES (?, ?, ?)", [(i, s, int(p)) for i, s, p in photos])
        con.executemany(
            "INSERT INTO items (id, photo_id, model, is_real, file) VALUES (?, ?, ?, ?, ?)",
            [(i, p, m, int(m == REAL_LABEL), f) for i, p, m, f in items],
        )
        con.execute("COMMIT")
    finally:
        con.close()


def plan_trials(
    main_photos: Sequence[int],
    practice_photos: Sequence[int],
    items: dict[tuple[int, str], str],
    models: Sequence[str],
    mode: str,
    seed: int,
    rotation: int = 0,
) -> list[PlannedTrial]:
    """Plan one session: practice trials first, then one trial per main photo.

    Design (why each choice):

    * **Each photo appears once per session.** If a real photo came back in several trials
      (against different models), the image common to them would give the real one away.
    * **Counterbalanced conditions.** A *condition* is what a photo is shown as: in ``real`` mode
      the real photo against one model; in ``natural`` mode one unordered pair of candidates
      (the real photo and every model, so model-vs-model pairs too). Photo ``i`` (in the
      canonical, prepared order) gets condition ``(i + rotation) % C``: within a session the
      conditions are spread evenly over the photos, and sessions with ``rotation`` 0..C-1 (the
      server uses the number of earlier sessions of the mode) show every photo in every
      condition: a Latin square over photos and conditions.
    * **Random order** of the main trials (and, separately, of the practice trials).
    * **Balanced random sides.** Exactly half of the main trials (one more on either side,
      chosen at random, when odd) have the real photo (``natural``: the pair's first candidate)
      on the left, in a random arrangement, so a participant who always answers one side scores
      exactly chance. Practice sides are drawn independently.

    Args:
        main_photos: photo ids of the scored trials, in canonical order.
        practice_photos: photo ids of the practice trials.
        items: ``{(photo_id, model): item_id}``, with ``model`` = :data:`REAL_LABEL` for the photo.
        models: model labels, in canonical order.
        mode: ``"real"`` or ``"natural"``.
        seed: the session's seed; the same arguments always give the same plan.
        rotation: the session's counterbalancing offset.

    Returns:
        The trials in presentation order, practice ones first.

    Raises:
        StudyError: an unknown mode, no models, or an item missing from ``items``.
    """
    if mode not in MODES:
        raise StudyError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if not models:
        raise StudyError("the study has no models")
    if mode == "real":
        conditions = [(m, REAL_LABEL) for m in models]
    else:
        cands = list(models) + [REAL_LABEL]
        conditions = [(cands[a], cands[b]) for a in range(len(cands)) for b in range(a + 1, len(cands))]
    rng = random.Random(seed)

    def pair(photo: int, k: int) -> tuple[str, str]:
        a, b = conditions[(k + rotation) % len(conditions)]
        try:
            return items[(photo, a)], items[(photo, b)]
        except KeyError as e:
            raise StudyError(f"photo {photo} has no image for {e.args[0][1]!r}") from None

    practice = [pair(p, k) for k, p in enumerate(practice_photos)]
    rng.shuffle(practice)
    main = [pair(p, k) for k, p in enumerate(main_photos)]
    rng.shuffle(main)
    # The fake (or the pair's first candidate) on the right in exactly half of the trials.
    n = len(main)
    flips = [True] * (n // 2) + [False] * (n // 2)
    if n % 2:
        flips.append(rng.random() < 0.5)
    rng.shuffle(flips)
    out = [PlannedTrial(True, *((b, a) if rng.random() < 0.5 else (a, b))) for a, b in practice]
    # conditions are (model, real) / (first, second): flip=True puts the second on the left.
    out += [PlannedTrial(False, *((b, a) if flip else (a, b))) for (a, b), flip in zip(main, flips)]
    return out


class StudyDB:
    """Access to one study folder's database; safe to share between threads.

    Args:
        study_dir: a folder made by :func:`colorgan.study.prepare.prepare_study`.

    Raises:
        StudyError: the folder or its ``study.sqlite`` is missing, or not a ColorGAN study.
    """

    def __init__(self, study_dir: str | Path) -> None:
        self.dir = Path(study_dir)
        self.path = self.dir / DB_NAME
        if not self.dir.is_dir():
            raise StudyError(f"{self.dir}: no such study folder (make one with 'colorgan study prepare')")
        if not self.path.is_file():
            raise StudyError(f"{self.dir}: not a study folder (no {DB_NAME}; make one with 'colorgan study prepare')")
        try:
            with self._read() as con:
                rows = con.execute("SELECT key, value FROM manifest").fetchall()
        except sqlite3.DatabaseError as e:
            raise StudyError(f"{self.path}: not a study database ({e})") from None
        self.manifest: dict[str, Any] = {r["key"]: json.loads(r["value"]) for r in rows}
        if self.manifest.get("schema") != SCHEMA_VERSION:
            raise StudyError(f"{self.path}: unsupported study schema {self.manifest.get('schema')!r} (expected {SCHEMA_VERSION})")
        self.models: list[str] = list(self.manifest.get("models", []))

    # ------------------------------------------------------------------ connections

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        con = _connect(self.path)
        try:
            con.execute("BEGIN")  # one consistent snapshot for multi-statement reads
            yield con
            con.execute("COMMIT")
        finally:
            con.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        con = _connect(self.path)
        try:
            # IMMEDIATE takes the write lock now, so check-then-insert sequences cannot interleave.
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    # ------------------------------------------------------------------ study content

    def photo_ids(self, practice: bool) -> list[int]:
        """Ids of the main (``practice=False``) or practice photos, in canonical order."""
        with self._read() as con:
            rows = con.execute("SELECT id FROM photos WHERE practice = ? ORDER BY id", (int(practice),)).fetchall()
        return [int(r["id"]) for r in rows]

    def item_map(self) -> dict[tuple[int, str], str]:
        """``{(photo_id, model): item_id}`` for every item."""
        with self._read() as con:
            rows = con.execute("SELECT id, photo_id, model FROM items").fetchall()
        return {(int(r["photo_id"]), r["model"]): r["id"] for r in rows}

    def image_path(self, item_id: str) -> Path:
        """The PNG file of an item.

        Raises:
            NotFoundError: not an item of this study (or its file is gone).
        """
        if not isinstance(item_id, str) or not _ITEM_ID.match(item_id):
            raise NotFoundError(f"no image {item_id!r}")
        with self._read() as con:
            row = con.execute("SELECT file FROM items WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no image {item_id!r}")
        path = self.dir / IMAGES_DIR / row["file"]
        if not path.is_file():
            raise NotFoundError(f"image {item_id!r} is missing from {self.dir / IMAGES_DIR}")
        return path

    # ------------------------------------------------------------------ sessions

    def create_session(
        self,
        mode: str,
        participant: str | None = None,
        *,
        seed: int | None = None,
        exposure_ms: int = 0,
    ) -> dict[str, Any]:
        """Start a session and store its plan (see :func:`plan_trials`).

        Args:
            mode: ``"real"`` or ``"natural"``.
            participant: a label shared by a participant's sessions (at most 64 printable
                characters); None or empty: the session id (an anonymous participant).
            seed: the plan's seed (None: a random one, stored with the session).
            exposure_ms: how long the page shows each pair (0: until answered); stored only.

        Returns:
            :meth:`session` of the new session, with ``"trials"`` (see :meth:`trials`).

        Raises:
            StudyError: bad mode, participant, seed or exposure.
        """
        if mode not in MODES:
            raise StudyError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        participant = (participant or "").strip()
        if len(participant) > MAX_PARTICIPANT_LEN or not participant.isprintable():
            raise StudyError(f"participant must be at most {MAX_PARTICIPANT_LEN} printable characters")
        if seed is None:
            seed = secrets.randbits(52)  # below 2**53: survives a round trip through JavaScript
        elif not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
            raise StudyError(f"seed must be an integer in [0, 2**63), got {seed!r}")
        if not isinstance(exposure_ms, int) or exposure_ms < 0:
            raise StudyError(f"exposure_ms must be a non-negative integer, got {exposure_ms!r}")
        main, practice, items = self.photo_ids(False), self.photo_ids(True), self.item_map()
        sid = secrets.token_urlsafe(16)
        with self._write() as con:
            # Counted inside the write transaction: concurrent starts get consecutive rotations.
            rotation = con.execute("SELECT COUNT(*) FROM sessions WHERE mode = ?", (mode,)).fetchone()[0]
            plan = plan_trials(main, practice, items, self.models, mode, seed, rotation)
            con.execute(
                "INSERT INTO sessions (id, mode, participant, seed, rotation, exposure_ms, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sid, mode, participant or sid, seed, rotation, exposure_ms, time.time()),
            )
            con.executemany(
                "INSERT INTO trials (session_id, position, practice, left_item, right_item) VALUES (?, ?, ?, ?, ?)",
                [(sid, i, int(t.practice), t.left, t.right) for i, t in enumerate(plan)],
            )
        info = self.session(sid)
        info["trials"] = self.trials(sid)
        return info

    def session(self, session_id: str) -> dict[str, Any]:
        """A session's state (nothing that tells real from fake).

        Returns:
            ``{"session_id", "mode", "question", "participant", "exposure_ms", "created",
            "finished", "n_practice", "n_trials", "answered", "done"}``; ``n_trials`` counts
            the scored trials only, ``answered`` practice ones too.

        Raises:
            NotFoundError: no such session.
        """
        with self._read() as con:
            s = self._session_row(con, session_id)
            counts = con.execute(
                "SELECT SUM(t.practice) AS p, SUM(1 - t.practice) AS m, COUNT(a.trial_id) AS a "
                "FROM trials t LEFT JOIN answers a ON a.trial_id = t.id WHERE t.session_id = ?",
                (session_id,),
            ).fetchone()
        n_practice, n_main, answered = int(counts["p"] or 0), int(counts["m"] or 0), int(counts["a"] or 0)
        return {
            "session_id": s["id"],
            "mode": s["mode"],
            "question": QUESTIONS[s["mode"]],
            "participant": s["participant"],
            "exposure_ms": int(s["exposure_ms"]),
            "created": s["created"],
            "finished": s["finished"],
            "n_practice": n_practice,
            "n_trials": n_main,
            "answered": answered,
            "done": answered == n_practice + n_main,
        }

    def trials(self, session_id: str) -> list[dict[str, Any]]:
        """A session's trials in order: ``[{"id", "position", "practice", "left", "right", "answered"}]``.

        ``left``/``right`` are item ids: nothing here says which one is real.

        Raises:
            NotFoundError: no such session.
        """
        with self._read() as con:
            self._session_row(con, session_id)
            rows = con.execute(
                "SELECT t.id, t.position, t.practice, t.left_item, t.right_item, a.trial_id IS NOT NULL AS answered "
                "FROM trials t LEFT JOIN answers a ON a.trial_id = t.id WHERE t.session_id = ? ORDER BY t.position",
                (session_id,),
            ).fetchall()
        return [
            {
                "id": int(r["id"]),
                "position": int(r["position"]),
                "practice": bool(r["practice"]),
                "left": r["left_item"],
                "right": r["right_item"],
                "answered": bool(r["answered"]),
            }
            for r in rows
        ]

    def next_trial(self, session_id: str) -> dict[str, Any] | None:
        """The first unanswered trial of a session (see :meth:`trials`), or None when done.

        Raises:
            NotFoundError: no such session.
        """
        for t in self.trials(session_id):
            if not t["answered"]:
                return t
        return None

    def record_answer(self, session_id: str, trial_id: int, choice: str, rt_ms: float | None) -> dict[str, Any]:
        """Store the answer to a trial; trials must be answered once each, in order.

        Args:
            session_id: the session.
            trial_id: one of its trials (the first unanswered one).
            choice: ``"left"`` or ``"right"``: the image picked.
            rt_ms: response time in milliseconds measured by the page (None: unknown).

        Returns:
            ``{"trial_id", "practice", "answered", "total", "done", "feedback"}``. ``feedback`` is
            None for scored trials (the participant learns nothing about them); for practice
            trials it is ``{"correct": bool, "real_side": "left"|"right"}`` in ``real`` mode and
            ``{"correct": None, "real_side": None}`` in ``natural`` mode (no right answer).

        Raises:
            StudyError: a bad choice or response time.
            NotFoundError: no such session, or the trial is not one of its trials.
            ConflictError: the trial is already answered, or an earlier one is not.
        """
        if choice not in ("left", "right"):
            raise StudyError(f"choice must be 'left' or 'right', got {choice!r}")
        if rt_ms is not None:
            try:
                rt_ms = float(rt_ms)
            except (TypeError, ValueError):
                raise StudyError(f"rt_ms must be a number, got {rt_ms!r}") from None
            if not 0.0 <= rt_ms <= MAX_RT_MS:  # also refuses NaN
                raise StudyError(f"rt_ms must be in [0, {MAX_RT_MS:.0f}], got {rt_ms!r}")
        with self._write() as con:
            s = self._session_row(con, session_id)
            t = con.execute(
                "SELECT t.id, t.position, t.practice, l.is_real AS left_real, r.is_real AS right_real "
                "FROM trials t JOIN items l ON l.id = t.left_item JOIN items r ON r.id = t.right_item "
                "WHERE t.id = ? AND t.session_id = ?",
                (trial_id, session_id),
            ).fetchone()
            if t is None:
                raise NotFoundError(f"session {session_id!r} has no trial {trial_id!r}")
            if con.execute("SELECT 1 FROM answers WHERE trial_id = ?", (trial_id,)).fetchone() is not None:
                raise ConflictError(f"trial {trial_id} is already answered")
            first_open = con.execute(
                "SELECT MIN(t.position) FROM trials t LEFT JOIN answers a ON a.trial_id = t.id "
                "WHERE t.session_id = ? AND a.trial_id IS NULL",
                (session_id,),
            ).fetchone()[0]
            if first_open != t["position"]:
                raise ConflictError(f"trial {trial_id} is not the next one: answer the trials in order")
            now = time.time()
            con.execute(
                "INSERT INTO answers (trial_id, choice, rt_ms, answered) VALUES (?, ?, ?, ?)", (trial_id, choice, rt_ms, now)
            )
            answered, total = con.execute(
                "SELECT COUNT(a.trial_id), COUNT(*) FROM trials t LEFT JOIN answers a ON a.trial_id = t.id WHERE t.session_id = ?",
                (session_id,),
            ).fetchone()
            done = answered == total
            if done:
                con.execute("UPDATE sessions SET finished = ? WHERE id = ?", (now, session_id))
        feedback = None
        if t["practice"]:
            if s["mode"] == "real":
                real_side = "left" if t["left_real"] else "right"
                feedback = {"correct": choice == real_side, "real_side": real_side}
            else:
                feedback = {"correct": None, "real_side": None}
        return {
            "trial_id": int(t["id"]),
            "practice": bool(t["practice"]),
            "answered": int(answered),
            "total": int(total),
            "done": bool(done),
            "feedback": feedback,
        }

    # ------------------------------------------------------------------ analysis

    def answer_rows(self) -> list[dict[str, Any]]:
        """Every answered trial joined with its session and items, in session and trial order.

        Returns:
            Dicts with ``session, participant, mode, trial, position, practice, photo_id, photo,
            left_item, right_item, left_model, right_model, left_real, right_real, choice,
            chosen_model, correct, rt_ms, answered`` (``correct``: 1/0 whether the real photo
            was picked, in ``real`` mode; None in ``natural`` mode).
        """
        with self._read() as con:
            rows = con.execute(
                "SELECT s.id AS session, s.participant, s.mode, s.created, t.id AS trial, t.position, t.practice, "
                "l.photo_id, p.source AS photo, t.left_item, t.right_item, l.model AS left_model, r.model AS right_model, "
                "l.is_real AS left_real, r.is_real AS right_real, a.choice, a.rt_ms, a.answered "
                "FROM answers a JOIN trials t ON t.id = a.trial_id JOIN sessions s ON s.id = t.session_id "
                "JOIN items l ON l.id = t.left_item JOIN items r ON r.id = t.right_item JOIN photos p ON p.id = l.photo_id "
                "ORDER BY s.created, s.id, t.position"
            ).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["practice"] = bool(d["practice"])
            d["chosen_model"] = d["left_model"] if d["choice"] == "left" else d["right_model"]
            if d["mode"] == "real":
                d["correct"] = int(bool(d["left_real"] if d["choice"] == "left" else d["right_real"]))
            else:
                d["correct"] = None
            out.append(d)
        return out

    def session_rows(self) -> list[dict[str, Any]]:
        """Every session: ``id, mode, participant, created, finished``."""
        with self._read() as con:
            rows = con.execute("SELECT id, mode, participant, created, finished FROM sessions ORDER BY created, id").fetchall()
        return [dict(r) for r in rows]

    @staticmethod
    def _session_row(con: sqlite3.Connection, session_id: str) -> sqlite3.Row:
        """A session's row, read in the caller's transaction (the one lookup every session method uses).

        Raises:
            NotFoundError: not a well-formed session id, or no such session.
        """
        row = None
        if isinstance(session_id, str) and _SESSION_ID.match(session_id):
            row = con.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no session {session_id!r}")
        return row
