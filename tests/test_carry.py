"""tools/carry_run.py: a run folder survives pack -> parts -> unpack byte for byte, and damage is refused."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location("carry_run", Path(__file__).parents[1] / "tools" / "carry_run.py")
carry = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(carry)


def _run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "stages" / "00_pretrain_g").mkdir(parents=True)
    (run / "config.json").write_text('{"seed": 0}\n')
    (run / "stages" / "00_pretrain_g" / "checkpoint.pt").write_bytes(bytes(range(256)) * 40)  # 10,240 bytes
    (run / "stages" / "00_pretrain_g" / "log.csv").write_text("step,loss\n10,0.5\n")
    (run / "stages" / "00_pretrain_g" / ".checkpoint.pt.123.tmp").write_bytes(b"torn")  # never carried
    return run


def test_round_trip_in_several_parts(tmp_path):
    run = _run(tmp_path)
    parts = carry.pack(run, tmp_path / "carry", part_bytes=4096)
    assert len(parts) >= 4 and all(p.stat().st_size <= 4096 for p in parts)
    got = carry.unpack(tmp_path / "carry", tmp_path / "back")
    assert sorted(p.relative_to(tmp_path / "back").as_posix() for p in got) == [
        "config.json", "stages/00_pretrain_g/checkpoint.pt", "stages/00_pretrain_g/log.csv"]
    for p in got:
        assert p.read_bytes() == (run / p.relative_to(tmp_path / "back")).read_bytes()


def test_pack_replaces_old_parts(tmp_path):
    run = _run(tmp_path)
    carry.pack(run, tmp_path / "carry", part_bytes=1024)
    parts = carry.pack(run, tmp_path / "carry", part_bytes=1 << 20)
    assert sorted(p.name for p in (tmp_path / "carry").glob("part-*")) == [p.name for p in parts] == ["part-000"]


def test_damaged_part_is_refused(tmp_path):
    carry.pack(_run(tmp_path), tmp_path / "carry", part_bytes=4096)
    part = tmp_path / "carry" / "part-001"
    data = bytearray(part.read_bytes())
    data[7] ^= 1
    part.write_bytes(bytes(data))
    with pytest.raises(SystemExit, match="part-001 does not match"):
        carry.unpack(tmp_path / "carry", tmp_path / "back")
    assert not (tmp_path / "back").exists()


def test_unpack_never_writes_over_a_run(tmp_path):
    run = _run(tmp_path)
    carry.pack(run, tmp_path / "carry")
    with pytest.raises(SystemExit, match="already holds files"):
        carry.unpack(tmp_path / "carry", run)
