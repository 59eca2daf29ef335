"""Human study (`colorgan study`): prepare, the HTTP API with scripted participants, scoring, CSV.

A tiny study (6 photos + 2 practice, 48 px, the tiny random generator and the grey baseline) is
prepared once per module; every test that writes answers works on its own copy.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from colorgan import color
from colorgan.cli import main
from colorgan.eval.metrics import center_crop_resize
from colorgan.models.baselines import GreyModel
from colorgan.pipeline import Colorizer
from colorgan.study.db import REAL_LABEL, ConflictError, StudyDB, StudyError, plan_trials
from colorgan.study.prepare import PrepareConfig, prepare_study
from colorgan.study.scoring import CSV_COLUMNS, summarize, wilson_interval, write_csv

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from colorgan.web.settings import LOOPBACK_HOSTS  # noqa: E402
from colorgan.web.study import STUDY_CSP, create_study_app  # noqa: E402

N_MAIN, N_PRACTICE, SIZE = 6, 2, 48
MODELS = ["tiny", "grey"]
Z95 = 1.959963984540054


def _photo(seed: int, w: int, h: int) -> np.ndarray:
    """Colourful smooth gradients plus a little noise: uint8 (H, W, 3), classified as colour."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / 32.0
    img = np.stack([0.5 + 0.4 * np.sin(3 * xx + 2.1 * c + seed) * np.cos(2 * yy + c) for c in range(3)], -1)
    img = img + 0.02 * rng.standard_normal(img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    from conftest import write_photos

    folder = tmp_path_factory.mktemp("photos")
    write_photos(folder, (_photo(i, 56 + 4 * i, 48 + 2 * (i % 3)) for i in range(10)), "photo{i:02d}.png")
    write_photos(folder, [np.repeat(_photo(99, 60, 50)[..., :1], 3, axis=2)], "grey.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


@pytest.fixture(scope="module")
def models(tiny_weights) -> dict:
    return {"tiny": Colorizer.from_pretrained(tiny_weights, device="cpu"), "grey": Colorizer(GreyModel(), name="grey")}


@pytest.fixture(scope="module")
def prepared(photos, models, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("studies") / "study"
    cfg = PrepareConfig(n=N_MAIN, practice=N_PRACTICE, size=SIZE, render_size=64, seed=3)
    warnings: list[str] = []
    summary = prepare_study(models, [photos], out, cfg, progress=False, report=warnings.append)
    return out, {"summary": summary, "warnings": warnings}


@pytest.fixture
def study(prepared, tmp_path) -> Path:
    """A fresh copy of the prepared study (tests write answers into it)."""
    dst = tmp_path / "study"
    shutil.copytree(prepared[0], dst)
    return dst


@pytest.fixture
def client(study):
    with TestClient(create_study_app(study)) as c:
        yield c


def _items(study: Path) -> dict[str, tuple[str, int]]:
    """{item id: (model, photo id)} read straight from the database: the test's oracle."""
    con = sqlite3.connect(study / "study.sqlite")
    try:
        return {r[0]: (r[1], r[2]) for r in con.execute("SELECT id, model, photo_id FROM items")}
    finally:
        con.close()


def _item_id(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    """The Wilson score interval written out independently of colorgan.study.scoring."""
    p = k / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 / denom * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _run_session(client, study, *, participant, seed, mode="real", pick, stop_after=None) -> list[dict]:
    """A scripted participant: ``pick(left_model, right_model, practice) -> 'left'|'right'``.

    Answers through the HTTP API, trial by trial (GET next, POST answer), and returns what it did.
    """
    items = _items(study)
    r = client.post("/api/study/sessions", json={"mode": mode, "participant": participant, "seed": seed})
    assert r.status_code == 201, r.text
    sid = r.json()["session_id"]
    log = []
    while stop_after is None or len(log) < stop_after:
        nxt = client.get(f"/api/study/sessions/{sid}/next").json()
        if nxt["done"]:
            break
        t = nxt["trial"]
        lm, rm = items[_item_id(t["left"])][0], items[_item_id(t["right"])][0]
        choice = pick(lm, rm, t["practice"])
        a = client.post(f"/api/study/sessions/{sid}/answers", json={"trial_id": t["id"], "choice": choice, "rt_ms": 800.0 + len(log)})
        assert a.status_code == 201, a.text
        log.append({"trial": t, "left": lm, "right": rm, "choice": choice, "response": a.json(), "session": sid})
    return log


# ------------------------------------------------------------------------------------------------
# prepare
# ------------------------------------------------------------------------------------------------


def test_prepare_builds_database_and_images(prepared, photos):
    out, info = prepared
    s = info["summary"]
    assert (s["photos"], s["practice"], s["images"]) == (N_MAIN, N_PRACTICE, (N_MAIN + N_PRACTICE) * 3)
    # The broken file is reported and counted as a failure; the grey photo is skipped, not failed.
    reasons = {Path(x["file"]).name: x["reason"] for x in s["skipped"]}
    assert s["failed"] == (1 if "broken.jpg" in reasons else 0)
    assert all("not a colour photo" in r for n, r in reasons.items() if n == "grey.png")

    db = StudyDB(out)
    assert db.models == MODELS
    assert db.manifest["n_photos"] == N_MAIN and db.manifest["n_practice"] == N_PRACTICE
    con = sqlite3.connect(out / "study.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = con.execute("SELECT i.id, i.model, i.is_real, i.file, p.source, p.practice FROM items i JOIN photos p ON p.id = i.photo_id").fetchall()
    con.close()
    assert len(rows) == (N_MAIN + N_PRACTICE) * 3
    by_photo: dict[str, dict[str, np.ndarray]] = {}
    for item_id, model, is_real, file, source, _ in rows:
        assert file == f"{item_id}.png" and len(item_id) == 32  # opaque: says nothing about the model
        assert is_real == (model == REAL_LABEL)
        img = np.asarray(Image.open(out / "images" / file))
        assert img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8
        by_photo.setdefault(source, {})[model] = img
    assert len(by_photo) == N_MAIN + N_PRACTICE
    assert not any(Path(src).name in ("grey.png", "broken.jpg") for src in by_photo)
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(r[3] for r in rows)  # no stray files
    for source, imgs in by_photo.items():
        # The real image is the photo, resized + centre-cropped, 8-bit.
        expected = np.round(center_crop_resize(np.asarray(Image.open(source), dtype=np.float32) / 255.0, SIZE) * 255)
        assert np.array_equal(imgs[REAL_LABEL], expected.astype(np.uint8))
        L = {m: color.rgb_to_l(_t(a))[0, 0].numpy() for m, a in imgs.items()}
        for m in MODELS:
            # Same luminance as the real image up to the output's 8-bit rounding (about 0.2 here; a
            # model given the unrounded photo's L would be off by up to about 0.37): the pair
            # differs in colour alone.
            assert np.abs(L[m] - L[REAL_LABEL]).max() < 0.3
        assert np.abs(imgs["grey"].astype(int).max(axis=2) - imgs["grey"].astype(int).min(axis=2)).max() <= 1
        assert np.abs(imgs["tiny"].astype(int) - imgs[REAL_LABEL].astype(int)).max() > 10  # really recoloured


def _t(a: np.ndarray):
    import torch

    return torch.from_numpy(a.astype(np.float32) / 255.0).permute(2, 0, 1)[None]


def test_prepare_same_seed_same_photos(prepared, photos, models, tmp_path):
    out, _ = prepared
    cfg = PrepareConfig(n=N_MAIN, practice=N_PRACTICE, size=SIZE, render_size=64, seed=3)
    again = tmp_path / "again"
    prepare_study({"grey": models["grey"]}, [photos], again, cfg, progress=False, report=lambda m: None)
    other = tmp_path / "other"
    prepare_study({"grey": models["grey"]}, [photos], other, PrepareConfig(n=N_MAIN, practice=0, size=SIZE, render_size=64, seed=4), progress=False, report=lambda m: None)

    def sources(d: Path) -> list[tuple[str, int]]:
        con = sqlite3.connect(d / "study.sqlite")
        try:
            return con.execute("SELECT source, practice FROM photos ORDER BY id").fetchall()
        finally:
            con.close()

    assert sources(again) == sources(out)
    assert sources(other) != sources(out)[:N_MAIN]


def test_prepare_refuses_existing_study_and_cleans_up_failures(prepared, photos, models, tmp_path):
    out, _ = prepared
    before = (out / "study.sqlite").read_bytes()
    with pytest.raises(StudyError, match="already holds a study"):
        prepare_study(models, [photos], out, PrepareConfig(n=2, practice=0, size=SIZE, render_size=64), progress=False)
    assert (out / "study.sqlite").read_bytes() == before
    # No colour photo at all: an error, and nothing left behind.
    greys = tmp_path / "greys"
    greys.mkdir()
    shutil.copy(photos / "grey.png", greys / "g.png")
    target = tmp_path / "nothing"
    with pytest.raises(StudyError, match="no usable colour photos"):
        prepare_study(models, [greys], target, PrepareConfig(n=2, practice=0, size=SIZE, render_size=64), progress=False, report=lambda m: None)
    assert not target.exists()
    with pytest.raises(StudyError, match="invalid model label"):
        prepare_study({REAL_LABEL: models["grey"]}, [photos], tmp_path / "x", progress=False)


def test_prepare_fewer_photos_than_asked_warns(photos, models, tmp_path):
    few = tmp_path / "few"
    few.mkdir()
    for i in range(3):
        shutil.copy(photos / f"photo{i:02d}.png", few)
    warnings: list[str] = []
    s = prepare_study({"grey": models["grey"]}, [few], tmp_path / "s", PrepareConfig(n=2, practice=3, size=SIZE, render_size=64), progress=False, report=warnings.append)
    assert (s["photos"], s["practice"]) == (2, 1)
    assert any("only 3 usable colour photos" in w for w in warnings)


# ------------------------------------------------------------------------------------------------
# planning: randomised, balanced, reproducible
# ------------------------------------------------------------------------------------------------


def _fake_items(n_photos: int, models: list[str]) -> dict:
    return {(p, m): f"{p}:{m}" for p in range(n_photos) for m in [*models, REAL_LABEL]}


def test_plan_randomised_balanced_and_reproducible():
    models = ["a", "b", "c"]
    main, practice = list(range(3, 23)), [0, 1, 2]
    items = _fake_items(23, models)
    plan = plan_trials(main, practice, items, models, "real", seed=7)
    assert plan == plan_trials(main, practice, items, models, "real", seed=7)  # reproducible
    other = plan_trials(main, practice, items, models, "real", seed=8)
    assert [t.left for t in other] != [t.left for t in plan]  # and random
    assert [t.practice for t in plan] == [True] * 3 + [False] * 20  # practice first
    scored = [t for t in plan if not t.practice]
    photos_shown = [int(t.left.split(":")[0]) for t in scored]
    assert sorted(photos_shown) == main  # each photo exactly once
    assert photos_shown != main  # shuffled
    real_left = sum(t.left.endswith(REAL_LABEL) for t in scored)
    assert real_left == 10  # exactly half: always answering 'left' scores chance
    assert all(t.left.endswith(REAL_LABEL) != t.right.endswith(REAL_LABEL) for t in plan)
    per_model = {m: sum(1 for t in scored if m in (t.left.split(":")[1], t.right.split(":")[1])) for m in models}
    assert max(per_model.values()) - min(per_model.values()) <= 1  # conditions spread evenly
    # Latin square: sessions with rotations 0..2 show every photo with every model.
    seen = {(int(t.left.split(":")[0]), (t.left if not t.left.endswith(REAL_LABEL) else t.right).split(":")[1])
            for r in range(3) for t in plan_trials(main, practice, items, models, "real", seed=r, rotation=r) if not t.practice}
    assert seen == {(p, m) for p in main for m in models}
    # natural mode: all unordered pairs of {a, b, c, ground truth} appear, model-vs-model too
    nat = [t for t in plan_trials(main, practice, items, models, "natural", seed=1) if not t.practice]
    pairs = {frozenset((t.left.split(":")[1], t.right.split(":")[1])) for t in nat}
    assert len(pairs) == 6 and frozenset(("a", "b")) in pairs
    with pytest.raises(StudyError):
        plan_trials(main, practice, items, models, "other", seed=1)


def test_sessions_through_api_random_sides_reproducible_per_seed(prepared, tmp_path):
    copies = []
    for k in range(2):
        d = tmp_path / f"s{k}"
        shutil.copytree(prepared[0], d)
        copies.append(d)
    plans = []
    for d in copies:
        with TestClient(create_study_app(d)) as c:
            r = c.post("/api/study/sessions", json={"mode": "real", "seed": 42})
            assert r.status_code == 201
            plans.append([(t["left"], t["right"], t["practice"]) for t in r.json()["trials"]])
    assert plans[0] == plans[1]  # same study, same seed, same rotation -> same plan
    items = _items(copies[0])
    real_left = [items[_item_id(left)][0] == REAL_LABEL for left, _, practice in plans[0] if not practice]
    assert 0 < sum(real_left) < len(real_left)  # not always real on the left
    with TestClient(create_study_app(copies[0])) as c:
        other = c.post("/api/study/sessions", json={"mode": "real", "seed": 43}).json()["trials"]
    assert [(t["left"], t["right"]) for t in other] != [p[:2] for p in plans[0]]


# ------------------------------------------------------------------------------------------------
# the API with scripted participants
# ------------------------------------------------------------------------------------------------


def test_scripted_participants_fooling_rate_and_wilson(client, study):
    def cheat_for_tiny(left, right, practice):
        if practice:  # practice answers are wrong on purpose: they must not be counted
            return "left" if left != REAL_LABEL else "right"
        fake = right if left == REAL_LABEL else left
        want = fake if fake == "tiny" else REAL_LABEL  # fooled by tiny, never by grey
        return "left" if left == want else "right"

    alice = _run_session(client, study, participant="alice", seed=11, pick=cheat_for_tiny)
    assert len(alice) == N_MAIN + N_PRACTICE
    for step in alice[:N_PRACTICE]:  # practice feedback tells the truth
        fb = step["response"]["feedback"]
        assert fb["real_side"] == ("left" if step["left"] == REAL_LABEL else "right")
        assert fb["correct"] is False
    for step in alice[N_PRACTICE:]:  # scored trials tell nothing
        assert step["response"]["feedback"] is None and step["response"]["practice"] is False
    assert alice[-1]["response"]["done"] is True

    res = client.get("/api/study/results").json()["real"]
    by = {m["model"]: m for m in res["models"]}
    # Hand count: rotation 0 gives each model 3 of the 6 photos; alice is fooled by every tiny trial.
    assert (by["tiny"]["trials"], by["tiny"]["fooled"], by["tiny"]["rate"]) == (3, 3, 1.0)
    assert (by["grey"]["trials"], by["grey"]["fooled"], by["grey"]["rate"]) == (3, 0, 0.0)
    # Wilson 95% for 3/3 and 0/3: [n/(n+z^2), 1] and [0, z^2/(n+z^2)], i.e. 0.4385 and 0.5615.
    assert by["tiny"]["ci95"] == pytest.approx([0.43850, 1.0], abs=1e-4)
    assert by["grey"]["ci95"] == pytest.approx([0.0, 0.56150], abs=1e-4)
    assert (res["trials"], res["participants"], res["sessions"]) == (N_MAIN, 1, 1)

    # bob always presses 'left'; a second session of alice stops early (always right answers).
    bob = _run_session(client, study, participant="bob", seed=12, pick=lambda left, right, practice: "left")
    alice2 = _run_session(client, study, participant="alice", seed=13, stop_after=N_PRACTICE + 2,
                          pick=lambda left, right, practice: "left" if left == REAL_LABEL else "right")
    expected = {}
    for m in MODELS:
        n = k = 0
        for step in (alice + bob + alice2):
            if step["trial"]["practice"] or m not in (step["left"], step["right"]):
                continue
            n += 1
            chosen = step["left"] if step["choice"] == "left" else step["right"]
            k += chosen != REAL_LABEL
        expected[m] = (n, k)
    assert sum(n for n, _ in expected.values()) == 2 * N_MAIN + 2
    res = client.get("/api/study/results").json()["real"]
    by = {m["model"]: m for m in res["models"]}
    for m, (n, k) in expected.items():
        assert (by[m]["trials"], by[m]["fooled"]) == (n, k)
        assert by[m]["rate"] == pytest.approx(k / n)
        assert by[m]["ci95"] == pytest.approx(list(_wilson_by_hand(k, n)), abs=1e-9)
    pooled_n, pooled_k = sum(n for n, _ in expected.values()), sum(k for _, k in expected.values())
    assert (res["pooled"]["trials"], res["pooled"]["fooled"]) == (pooled_n, pooled_k)
    assert (res["participants"], res["sessions"]) == (2, 3)
    # Side balance: bob (always left) is fooled in exactly half of his trials.
    assert sum(1 for s in bob if not s["trial"]["practice"] and s["left"] != REAL_LABEL) == N_MAIN // 2

    # complete_only drops alice's unfinished session; the CLI prints the same numbers.
    complete = summarize(study, complete_only=True)["real"]
    assert complete["trials"] == 2 * N_MAIN and complete["sessions"] == 2
    assert main(["study", "results", str(study), "--json"]) == 0


def test_cli_results_json_and_table(client, study, capsys):
    _run_session(client, study, participant="p", seed=1, pick=lambda left, right, practice: "right")
    capsys.readouterr()
    assert main(["study", "results", str(study), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["real"] == client.get("/api/study/results").json()["real"]
    assert main(["study", "results", str(study)]) == 0
    text = capsys.readouterr().out
    assert "fooling rate" in text and "tiny" in text and "grey" in text


def test_natural_mode_preferences(client, study):
    def prefer(left, right, practice):
        # tiny beats everything; otherwise the real photo beats grey.
        for want in ("tiny", REAL_LABEL):
            if want in (left, right):
                return "left" if left == want else "right"
        raise AssertionError("unreachable")

    log = _run_session(client, study, participant="n1", seed=5, mode="natural", pick=prefer)
    assert all(s["response"]["feedback"] == {"correct": None, "real_side": None} for s in log if s["trial"]["practice"])
    res = client.get("/api/study/results").json()
    assert res["real"]["trials"] == 0
    nat = res["natural"]
    pairs = {(p["a"], p["b"]): p for p in nat["pairs"]}
    assert set(pairs) == {("tiny", "grey"), ("tiny", REAL_LABEL), ("grey", REAL_LABEL)}
    # 6 photos over 3 pairs: 2 trials each (rotation 0).
    assert [(pairs[k]["trials"], pairs[k]["a_preferred"]) for k in [("tiny", "grey"), ("tiny", REAL_LABEL), ("grey", REAL_LABEL)]] == [(2, 2), (2, 2), (2, 0)]
    assert pairs[("grey", REAL_LABEL)]["ci95"] == pytest.approx(list(_wilson_by_hand(0, 2)))
    wins = {c["model"]: (c["comparisons"], c["wins"]) for c in nat["candidates"]}
    assert wins == {"tiny": (4, 4), "grey": (4, 0), REAL_LABEL: (4, 2)}
    assert nat["candidates"][2]["ci95"] == pytest.approx(list(_wilson_by_hand(2, 4)))


def test_answer_errors_404_409_422(client, study):
    s = client.post("/api/study/sessions", json={"participant": "x", "seed": 3}).json()
    sid, trials = s["session_id"], s["trials"]
    first, second = trials[0], trials[1]
    assert client.post(f"/api/study/sessions/{sid}/answers", json={"trial_id": second["id"], "choice": "left"}).status_code == 409  # out of order
    ok = client.post(f"/api/study/sessions/{sid}/answers", json={"trial_id": first["id"], "choice": "left", "rt_ms": 500})
    assert ok.status_code == 201
    again = client.post(f"/api/study/sessions/{sid}/answers", json={"trial_id": first["id"], "choice": "right", "rt_ms": 500})
    assert again.status_code == 409 and "already answered" in again.json()["detail"]
    # The first answer stands.
    rows = StudyDB(study).answer_rows()
    assert [(r["trial"], r["choice"]) for r in rows] == [(first["id"], "left")]

    other = client.post("/api/study/sessions", json={"participant": "y"}).json()
    assert client.post(f"/api/study/sessions/{sid}/answers", json={"trial_id": other["trials"][0]["id"], "choice": "left"}).status_code == 404
    assert client.post(f"/api/study/sessions/{sid}/answers", json={"trial_id": 999999, "choice": "left"}).status_code == 404
    assert client.post("/api/study/sessions/NoSuchSessionId0000/answers", json={"trial_id": first["id"], "choice": "left"}).status_code == 404
    assert client.get("/api/study/sessions/nope/next").status_code == 404
    assert client.get("/api/study/sessions/NoSuchSessionId0000").status_code == 404
    assert client.get("/api/study/images/" + "0" * 32).status_code == 404
    assert client.get("/api/study/images/..%2Fstudy.sqlite").status_code == 404
    assert client.get("/study/assets/study.html").status_code == 404
    # Malformed bodies are refused by validation.
    for body in ({"trial_id": second["id"], "choice": "up"}, {"trial_id": second["id"], "choice": "left", "rt_ms": -1}, {"choice": "left"}):
        assert client.post(f"/api/study/sessions/{sid}/answers", json=body).status_code == 422
    assert client.post("/api/study/sessions", json={"mode": "guess"}).status_code == 422
    assert client.post("/api/study/sessions", json={"participant": "z" * 65}).status_code == 422


def test_client_never_learns_truth_before_answering(client, study):
    s = client.post("/api/study/sessions", json={"seed": 9}).json()
    assert set(s["trials"][0]) == {"id", "position", "practice", "left", "right", "answered"}
    body = json.dumps(s)
    for word in ("tiny", "grey", REAL_LABEL, "is_real", "model"):
        assert word not in body
    t = s["trials"][N_PRACTICE]
    for url in (t["left"], t["right"]):
        r = client.get(url)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert Image.open(__import__("io").BytesIO(r.content)).size == (SIZE, SIZE)
    nxt = client.get(f"/api/study/sessions/{s['session_id']}/next").json()
    assert set(nxt) == {"done", "trial", "session"} and "model" not in json.dumps(nxt)


def test_csv_export_rows(client, study, tmp_path):
    log = _run_session(client, study, participant="csv-person", seed=2, pick=lambda left, right, practice: "right")
    log += _run_session(client, study, participant="other", seed=3, mode="natural", stop_after=4, pick=lambda left, right, practice: "left")
    path = tmp_path / "out" / "answers.csv"
    assert write_csv(study, path) == len(log)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == len(log)
    for row, step in zip(rows, log):
        assert row["session"] == step["session"]
        assert int(row["trial"]) == step["trial"]["id"]
        assert row["practice"] == str(int(step["trial"]["practice"]))
        assert (row["left_model"], row["right_model"], row["choice"]) == (step["left"], step["right"], step["choice"])
        assert (row["left_item"], row["right_item"]) == (_item_id(step["trial"]["left"]), _item_id(step["trial"]["right"]))
        chosen = step["left"] if step["choice"] == "left" else step["right"]
        assert row["chosen_model"] == chosen
        if row["mode"] == "real":
            assert row["correct"] == str(int(chosen == REAL_LABEL))
        else:
            assert row["correct"] == ""
        assert float(row["rt_ms"]) >= 800 and row["answered_at"].endswith("+00:00")
    assert {r["participant"] for r in rows} == {"csv-person", "other"}
    # Through the CLI too; refusing to write over the database.
    assert main(["study", "results", str(study), "--csv", str(tmp_path / "cli.csv")]) == 0
    assert (tmp_path / "cli.csv").read_text() == path.read_text()
    assert main(["study", "results", str(study), "--csv", str(study / "study.sqlite")]) == 2


# ------------------------------------------------------------------------------------------------
# concurrency, statistics, page, CLI
# ------------------------------------------------------------------------------------------------


def test_concurrent_answers_and_sessions(study):
    db = StudyDB(study)
    sessions: list[dict] = []
    lock = threading.Lock()

    def start():
        s = db.create_session("real", "c")
        with lock:
            sessions.append(s)

    threads = [threading.Thread(target=start) for _ in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    con = sqlite3.connect(study / "study.sqlite")
    rotations = sorted(r[0] for r in con.execute("SELECT rotation FROM sessions"))
    con.close()
    assert rotations == list(range(6))  # counted under the write lock: no two sessions share one
    sid, trial = sessions[0]["session_id"], sessions[0]["trials"][0]["id"]
    outcomes: list[str] = []

    def answer(choice):
        try:
            db.record_answer(sid, trial, choice, 100.0)
            outcomes.append("ok")
        except ConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=answer, args=("left" if i % 2 else "right",)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(outcomes) == ["conflict"] * 7 + ["ok"]
    assert len(db.answer_rows()) == 1


def test_wilson_interval_known_values():
    # 5/10 (the usual textbook example) and Newcombe (1998), Stat. Med. 17:857, Table I, method 3.
    known = {(5, 10): (0.2366, 0.7634), (81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605), (0, 20): (0.0, 0.1611), (1, 29): (0.0061, 0.1718)}
    for (k, n), (lo, hi) in known.items():
        got = wilson_interval(k, n)
        assert got == pytest.approx((lo, hi), abs=6e-5), (k, n, got)
    assert wilson_interval(3, 3) == (pytest.approx(3 / (3 + Z95**2)), 1.0)
    assert wilson_interval(0, 1)[0] == 0.0
    lo99, hi99 = wilson_interval(5, 10, confidence=0.99)
    assert lo99 < 0.2366 and hi99 > 0.7634
    for bad in [(1, 0), (-1, 5), (6, 5), (1.5, 3)]:
        with pytest.raises(ValueError):
            wilson_interval(*bad)
    scipy_stats = pytest.importorskip("scipy.stats")
    for k, n in [(7, 19), (0, 4), (40, 41), (123, 456)]:
        ci = scipy_stats.binomtest(k, n).proportion_ci(method="wilson")
        assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_page_assets_and_security_headers(client):
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/study"
    page = client.get("/study")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/study/assets/study.js"' in page.text
    for name, ctype in [("study.js", "javascript"), ("study.css", "text/css")]:
        a = client.get(f"/study/assets/{name}")
        assert a.status_code == 200 and ctype in a.headers["content-type"]
        assert "http://" not in a.text and "https://" not in a.text  # no CDN, works offline
    assert "https://" not in page.text and "http://" not in page.text
    info = client.get("/api/study/info").json()
    assert info["n_trials"] == N_MAIN and info["n_practice"] == N_PRACTICE and info["default_mode"] == "real"
    assert client.get("/docs").status_code == 404  # FastAPI's docs pages would load a CDN


def test_served_mode_and_trusted_hosts(study):
    with TestClient(create_study_app(study, modes=("natural",), exposure_ms=1000)) as c:
        assert c.get("/api/study/info").json()["exposure_ms"] == 1000
        assert c.post("/api/study/sessions", json={"mode": "real"}).status_code == 400
        s = c.post("/api/study/sessions", json={}).json()
        assert s["mode"] == "natural" and s["exposure_ms"] == 1000
    with TestClient(create_study_app(study, allowed_hosts=["127.0.0.1", "localhost"]), base_url="http://localhost") as c:
        assert c.get("/api/study/info").status_code == 200
        assert c.get("/api/study/info", headers={"host": "evil.example"}).status_code == 400
    with TestClient(create_study_app(study, results_api=False)) as c:
        assert c.get("/api/study/results").status_code == 404
        assert c.get("/api/study/info").status_code == 200
    with pytest.raises(StudyError):
        create_study_app(study, modes=("both",))
    with pytest.raises(StudyError, match="not a study folder"):
        create_study_app(study / "images")


def test_cli_prepare_end_to_end(photos, tiny_weights, tmp_path, capsys, monkeypatch):
    import colorgan.eval.report as report

    data = tmp_path / "data"
    data.mkdir()
    for name in ["photo00.png", "photo01.png", "photo02.png", "photo03.png", "broken.jpg", "grey.png"]:
        shutil.copy(photos / name, data)
    out = tmp_path / "cli-study"
    walks: list[tuple] = []
    real_collect = report.collect_files
    monkeypatch.setattr(report, "collect_files", lambda *a, **k: walks.append(a) or real_collect(*a, **k))
    # 3 + 2 asked, 4 usable: every file is read, the broken one too.
    rc = main(["study", "prepare", "--data", str(data), "--models", f"{tiny_weights},grey", "--out", str(out),
               "--n", "3", "--practice", "2", "--size", "40", "--render-size", "64", "--device", "cpu", "-q"])
    err = capsys.readouterr().err
    assert len(walks) == 1  # the data folders are walked once (the CLI's list is passed on)
    assert rc == 1 and "broken.jpg" in err and "could not be read" in err  # reported; the study is still made
    assert "only 4 usable colour photos" in err
    db = StudyDB(out)
    assert db.models == ["tiny", "grey"] and (db.manifest["n_photos"], db.manifest["n_practice"]) == (3, 1)
    assert len(list((out / "images").iterdir())) == 4 * 3
    # Usage errors: exit 2, one line, nothing touched.
    assert main(["study", "prepare", "--data", str(photos), "--models", "grey", "--out", str(out), "-q"]) == 2
    assert "already holds a study" in capsys.readouterr().err
    assert main(["study", "prepare", "--data", str(tmp_path / "missing"), "--models", "grey", "--out", str(tmp_path / "n"), "-q"]) == 2
    assert main(["study", "prepare", "--data", str(photos), "--models", "nosuchmodel", "--out", str(tmp_path / "n"), "-q"]) == 2
    assert not (tmp_path / "n").exists()
    assert main(["study", "results", str(tmp_path / "missing")]) == 2
    assert main(["study", "serve", str(tmp_path / "missing")]) == 2
    assert "no such study folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["study", "serve", str(out), "--mode", "guess"])
    assert e.value.code == 2


def test_prepare_uses_the_given_file_list(photos, models, tmp_path):
    chosen = [photos / "photo03.png", photos / "photo07.png"]
    s = prepare_study({"grey": models["grey"]}, [photos], tmp_path / "s", PrepareConfig(n=2, practice=0, size=SIZE, render_size=64),
                      files=chosen, progress=False, report=lambda m: None)
    assert s["photos"] == 2 and s["skipped"] == []  # not the broken or grey files of the folder
    con = sqlite3.connect(tmp_path / "s" / "study.sqlite")
    try:
        assert sorted(r[0] for r in con.execute("SELECT source FROM photos")) == sorted(map(str, chosen))
    finally:
        con.close()


def test_cli_argument_ranges(study, capsys):
    for argv, needle in [
        (["study", "serve", str(study), "--port", "70000"], "must be between 0 and 65535, got 70000"),
        (["study", "serve", str(study), "--port", "-1"], "must be between 0 and 65535, got -1"),
        (["study", "prepare", "--data", ".", "--models", "grey", "--out", "x", "--size", "16"], "must be between 32 and 2048, got 16"),
        (["study", "prepare", "--data", ".", "--models", "grey", "--out", "x", "--size", "4096"], "must be between 32 and 2048, got 4096"),
        (["study", "prepare", "--data", ".", "--models", "grey", "--out", "x", "--size", "big"], "not an integer: 'big'"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        assert needle in capsys.readouterr().err, argv


def test_cross_origin_posts_are_refused(study):
    """The study app has colorgan serve's guard: another site's page cannot start sessions or answer."""
    base = "http://127.0.0.1:8001"
    with TestClient(create_study_app(study, allowed_hosts=LOOPBACK_HOSTS), base_url=base) as c:
        evil = {"origin": "http://evil.example"}
        r = c.post("/api/study/sessions", json={"participant": "x"}, headers=evil)
        assert r.status_code == 403 and "cross-origin" in r.json()["detail"]
        # Same host, other port: another origin too.
        assert c.post("/api/study/sessions", json={}, headers={"origin": "http://127.0.0.1:9999"}).status_code == 403
        assert StudyDB(study).session_rows() == []  # nothing was stored
        r = c.post("/api/study/sessions", json={"participant": "x"}, headers={"origin": base})
        assert r.status_code == 201
        sid, trial = r.json()["session_id"], r.json()["trials"][0]["id"]
        r = c.post(f"/api/study/sessions/{sid}/answers", json={"trial_id": trial, "choice": "left"}, headers=evil)
        assert r.status_code == 403 and StudyDB(study).answer_rows() == []
        r = c.post(f"/api/study/sessions/{sid}/answers", json={"trial_id": trial, "choice": "left"}, headers={"origin": base})
        assert r.status_code == 201 and len(StudyDB(study).answer_rows()) == 1
        # No Origin header (curl, scripts): allowed, as for colorgan serve; reads never need one.
        assert c.post("/api/study/sessions", json={}).status_code == 201
        assert c.get("/api/study/info", headers=evil).status_code == 200
        # The guard's security headers, with the study page's own policy.
        page = c.get("/study")
        assert page.headers["content-security-policy"] == STUDY_CSP
        assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
        for r in (page, c.get("/api/study/info"), c.get("/study/assets/study.js"), c.get(f"/api/study/sessions/{sid}")):
            assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"
            assert len(r.headers.get_list("content-security-policy")) == 1  # set once, by the guard


def _serve_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.mark.integration
def test_study_serve_command_end_to_end(study):
    """`colorgan study serve` starts like `colorgan serve`: port 0 shows the real port, Ctrl-C exits 0."""
    import httpx

    proc = subprocess.Popen(
        [sys.executable, "-m", "colorgan", "study", "serve", str(study), "--port", "0", "--mode", "natural"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=_serve_env(),
    )
    try:
        line = proc.stderr.readline()
        m = re.search(r"serving on (http://127\.0\.0\.1:(\d+))/study \('natural' study, 6 pairs \+ 2 practice; Ctrl-C stops\)", line)
        assert m, line + (proc.stderr.read() if proc.poll() is not None else "")
        url = m.group(1)
        for _ in range(200):
            try:
                if httpx.get(url + "/api/study/info", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        assert httpx.get(url + "/api/study/info", timeout=5).json()["modes"] == ["natural"]
        assert httpx.get(url + "/study", timeout=5).headers["content-security-policy"] == STUDY_CSP
        assert httpx.get(url + "/api/study/info", headers={"host": "evil.example"}, timeout=5).status_code == 400
        assert httpx.post(url + "/api/study/sessions", json={}, headers={"origin": "http://evil.example"}, timeout=5).status_code == 403
        assert httpx.post(url + "/api/study/sessions", json={}, headers={"origin": url}, timeout=5).status_code == 201
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a graceful stop
        try:
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert "server stopped" in proc.stderr.read()


def test_study_serve_port_taken_is_one_line_error(study, capsys):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        assert main(["study", "serve", str(study), "--port", str(port)]) == 2
        err = capsys.readouterr().err
        assert f"colorgan: error: cannot listen on 127.0.0.1:{port}" in err and "serving on" not in err
    finally:
        taken.close()


# ------------------------------------------------------------------------------------------------
# the page itself, in a real browser
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def live_server(study):
    """The study app on a real uvicorn server (a thread), on a free loopback port."""
    uvicorn = pytest.importorskip("uvicorn")
    server = uvicorn.Server(uvicorn.Config(create_study_app(study), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        threading.Event().wait(0.05)
    assert server.started
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    driver_path = shutil.which("chromedriver")
    if not driver_path or not (shutil.which("chromium") or shutil.which("google-chrome") or shutil.which("chromium-browser")):
        pytest.skip("needs chromium and chromedriver")
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(options=opts, service=Service(driver_path))
    yield drv
    drv.quit()


@pytest.mark.integration
def test_page_in_browser_keyboard_practice_feedback_and_resume(live_server, browser, study):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    drv, wait = browser, WebDriverWait(browser, 15)
    # One script call reads the whole page state at once (separate element reads could
    # straddle a page update).
    snapshot = lambda: drv.execute_script(  # noqa: E731
        "const g = (id) => document.getElementById(id);"
        "return {done: !g('done').hidden, trial: !g('trial').hidden, intro: !g('intro').hidden,"
        " waiting: g('pair').classList.contains('waiting'), cont: !g('continue').hidden,"
        " label: g('phase').textContent + ' ' + g('count').textContent, start: g('start').textContent,"
        " feedback: g('feedback').textContent};"
    )

    def ready_or_done(last: str) -> dict:
        def check(_):
            s = snapshot()
            if s["done"] or (s["trial"] and not s["waiting"] and not s["cont"] and s["label"] != last):
                return s
            return False

        return wait.until(check)

    drv.get(f"{live_server}/study")
    wait.until(lambda d: snapshot()["intro"])
    drv.find_element("id", "participant").send_keys("browser-1")
    drv.find_element("id", "start").click()
    keys = [Keys.ARROW_LEFT, "f", Keys.ARROW_RIGHT, "j"]
    pressed: list[str] = []
    labels: list[str] = []
    feedback: list[str] = []
    last = ""
    db = StudyDB(study)
    while True:
        if len(pressed) == 3:  # reload mid-study: the page resumes the same session
            wait.until(lambda d: len(db.answer_rows()) == 3)  # the third answer has reached the server
            drv.refresh()
            wait.until(lambda d: snapshot()["intro"])
            assert snapshot()["start"] == "Continue where you left off"
            drv.find_element("id", "start").click()
            last = ""
        state = ready_or_done(last)
        if state["done"]:
            break
        labels.append(state["label"])
        last = state["label"]
        key = keys[len(pressed) % 4]
        drv.switch_to.active_element.send_keys(key)
        pressed.append("left" if key in (Keys.ARROW_LEFT, "f") else "right")
        if last.startswith("Practice"):
            feedback.append(wait.until(lambda d: (lambda s: s["cont"] and s["feedback"])(snapshot())))
            drv.switch_to.active_element.send_keys(Keys.SPACE)
    assert labels[:N_PRACTICE] == [f"Practice {i} of {N_PRACTICE}" for i in range(1, N_PRACTICE + 1)]
    assert labels[N_PRACTICE:] == [f"Photo {i} of {N_MAIN}" for i in range(1, N_MAIN + 1)]
    assert all("the real photo was the one on the" in f for f in feedback) and "practice is over" in feedback[-1]
    rows = db.answer_rows()
    assert [r["choice"] for r in rows] == pressed  # every key press recorded once, in order
    assert {r["session"] for r in rows} == {rows[0]["session"]} and rows[0]["participant"] == "browser-1"
    assert all(r["rt_ms"] is not None and r["rt_ms"] > 0 for r in rows)
    severe = [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []
