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


def test_compact_checkpoint_loads_back_into_the_model_and_its_optimiser(tmp_path):
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(4, 3)
            self.bn = nn.BatchNorm1d(3)
            self.guided = nn.Module()
            self.guided.head = nn.Linear(4, 3)  # the guided copy: rebuilt from `head`, never trained here
            self.register_buffer("guided_ready", torch.zeros(1))

        def forward(self, x):
            return self.bn(self.head(x))

    torch.manual_seed(0)
    net = Net()
    opt = torch.optim.Adam([p for n, p in net.named_parameters() if not n.startswith("guided")], lr=1e-3)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(8, 4)).square().mean().backward()
        opt.step()
    state = {"generator": net.state_dict(), "opt_g": opt.state_dict(), "step": 3, "rng": {"torch": torch.get_rng_state()}}
    run = tmp_path / "run" / "stages" / "00_pretrain_g"
    run.mkdir(parents=True)
    torch.save(state, run / "checkpoint.pt")
    carry.pack(tmp_path / "run", tmp_path / "carry", compact=True)
    carry.unpack(tmp_path / "carry", tmp_path / "back")
    back = torch.load(tmp_path / "back" / "stages" / "00_pretrain_g" / "checkpoint.pt", weights_only=True)
    assert back["step"] == 3 and torch.equal(back["rng"]["torch"], state["rng"]["torch"])
    net2 = Net()
    net2.load_state_dict(back["generator"])  # strict: every key is there, the guided copy included
    assert torch.allclose(net2.head.weight, net.head.weight, atol=1e-3) and not torch.equal(net2.head.weight, net.head.weight)
    assert torch.equal(net2.guided.head.weight, net2.head.weight)
    assert torch.equal(net2.bn.num_batches_tracked, net.bn.num_batches_tracked)
    opt2 = torch.optim.Adam([p for n, p in net2.named_parameters() if not n.startswith("guided")], lr=1e-3)
    opt2.load_state_dict(back["opt_g"])
    st, st0 = opt2.state_dict()["state"][0], opt.state_dict()["state"][0]
    assert float(st["step"]) == 3 and not st["exp_avg"].any()
    assert torch.allclose(st["exp_avg_sq"], st0["exp_avg_sq"].mean().expand_as(st0["exp_avg_sq"]))


def test_compact_keeps_a_started_guided_decoder(tmp_path):
    """Once the guidance stage has started the guided copy (guided_ready 1) it is trained: it travels."""
    import torch

    gen = {"head.weight": torch.ones(3, 4), "guided.head.weight": torch.full((3, 4), 2.0), "guided_ready": torch.ones(1)}
    back = carry.expand_checkpoint(carry.compact_checkpoint({"generator": gen, "step": 7}))
    assert torch.equal(back["generator"]["guided.head.weight"], gen["guided.head.weight"])
    gen["guided_ready"] = torch.zeros(1)
    back = carry.expand_checkpoint(carry.compact_checkpoint({"generator": gen, "step": 7}))
    assert torch.equal(back["generator"]["guided.head.weight"], gen["head.weight"])
