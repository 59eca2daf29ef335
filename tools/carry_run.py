"""Carry a training run folder from one machine to the next through git, in parts of at most 25 MB.

The default recipe takes many hours on a 2-core CPU, longer than one working session, and a session
may end on a machine whose ``runs/`` folder is gone the next time. ``colorgan train --resume`` needs
the run folder exactly as it was (the checkpoint holds the generator, the optimiser moments and the
random-number state, so a resumed run ends where an uninterrupted one would). This tool packs the
folder into an uncompressed tar split into parts small enough to commit, with a manifest of SHA-256
sums, and unpacks it again, refusing a part whose sum does not match::

    python tools/carry_run.py pack --compact runs/default training/carry/default   # at the end of a session
    python tools/carry_run.py unpack training/carry/default runs/default           # at the start of the next
    colorgan train --config configs/default.toml --out runs/default --resume

Stop the run first (Ctrl-C or SIGINT: the stage writes a checkpoint on the way out), so that the
packed log and checkpoint agree. ``pack`` replaces what was in the destination folder; ``unpack``
refuses to write into a run folder that already holds files.

``pack --compact`` trades exactness for size, for when the whole checkpoint cannot travel (this
project's working tree must stay under the 64 MiB that the lent GPU machine takes, and the
repository holds 49 MB already; a generator-pretraining checkpoint is 90 MB). It keeps module
weights and buffers in float16, drops the guided decoder's copy while it is untrained (the guidance
stage starts it from the automatic decoder anyway, and no earlier stage trains it), and keeps of Adam's moments only
each tensor's step count and mean second moment: ``unpack`` rebuilds the first moment as zeros and
the second as that mean, so the resumed run restarts its momentum with step sizes of the right
scale (no jolt of a fresh Adam at full learning rate). A compact resume is close to, not the same
as, an uninterrupted run; ``unpack`` says when it expanded one.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

PART_BYTES = 25 * 1024 * 1024
MANIFEST = "manifest.json"
COMPACT = ".compact.pt"  # a checkpoint.pt packed by --compact travels as checkpoint.pt.compact.pt
GUIDED = "guided."  # the guided decoder's copy inside a generator's state dict


def _is_module_state(v: object) -> bool:
    import torch

    return isinstance(v, dict) and bool(v) and all(isinstance(k, str) and torch.is_tensor(t) for k, t in v.items())


def _is_optimizer_state(v: object) -> bool:
    return isinstance(v, dict) and set(v) == {"state", "param_groups"}


def compact_checkpoint(state: dict) -> dict:
    """A checkpoint dict of :func:`colorgan.train.checkpoint.save_checkpoint` in compact form."""
    import torch

    out: dict = {"__compact__": 1}
    for key, v in state.items():
        if _is_module_state(v):
            # The guided copy is left out only while it is untrained (``guided_ready`` still 0):
            # once the guidance stage has started it, it holds weights of its own.
            untrained = "guided_ready" in v and not bool(v["guided_ready"].any())
            guided = [k for k in v if untrained and k.startswith(GUIDED) and k[len(GUIDED):] in v]
            mod = {k: (t.half() if t.is_floating_point() else t) for k, t in v.items() if k not in guided}
            out[key] = {"__module__": mod, "__guided__": guided}
        elif _is_optimizer_state(v):
            small = {}
            for pid, st in v["state"].items():
                small[pid] = {
                    name: (t if t.numel() <= 1 else {"shape": list(t.shape), "dtype": str(t.dtype).split(".")[-1], "mean": float(t.float().mean())})
                    for name, t in st.items()
                }
            out[key] = {"__optimizer__": small, "param_groups": v["param_groups"]}
        else:
            out[key] = v
    return out


def expand_checkpoint(small: dict) -> dict:
    """The inverse of :func:`compact_checkpoint`, as far as it goes (see the module docstring)."""
    import torch

    out: dict = {}
    for key, v in small.items():
        if key == "__compact__":
            continue
        if isinstance(v, dict) and "__module__" in v:
            mod = {k: (t.float() if t.dtype == torch.float16 else t) for k, t in v["__module__"].items()}
            for k in v["__guided__"]:
                mod[k] = mod[k[len(GUIDED):]].clone()
            out[key] = mod
        elif isinstance(v, dict) and "__optimizer__" in v:
            state = {}
            for pid, st in v["__optimizer__"].items():
                state[pid] = {}
                for name, t in st.items():
                    if isinstance(t, dict):
                        dtype = getattr(torch, t["dtype"])
                        fill = 0.0 if name == "exp_avg" else t["mean"]
                        state[pid][name] = torch.full(t["shape"], fill, dtype=dtype)
                    else:
                        state[pid][name] = t
            out[key] = {"state": state, "param_groups": v["param_groups"]}
        else:
            out[key] = v
    return out


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack(run: Path, dest: Path, part_bytes: int = PART_BYTES, compact: bool = False) -> list[Path]:
    """Pack every file under ``run`` but its validation grids into ``dest/part-NNN`` (each at most
    ``part_bytes``) and a manifest.

    ``compact``: every ``checkpoint.pt`` travels in compact form (module docstring)."""
    if not run.is_dir():
        raise SystemExit(f"carry_run: {run} is not a folder")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in run.rglob("*") if p.is_file() and not p.name.endswith(".tmp")):
            rel = path.relative_to(run)
            if "grids" in rel.parts:
                continue  # validation grids show the data's photos, which never go into the repository
            arc = str(rel)
            if compact and path.name == "checkpoint.pt":
                import torch

                small = io.BytesIO()
                torch.save(compact_checkpoint(torch.load(path, map_location="cpu", weights_only=True)), small)
                info = tarfile.TarInfo(arc + COMPACT)
                info.size, info.mtime = small.tell(), int(path.stat().st_mtime)
                small.seek(0)
                tar.addfile(info, small)
                continue
            tar.add(path, arcname=arc, recursive=False)
    data = buf.getvalue()
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("part-*"):
        old.unlink()
    parts = []
    for i in range(0, max(len(data), 1), part_bytes):
        chunk = data[i : i + part_bytes]
        part = dest / f"part-{i // part_bytes:03d}"
        part.write_bytes(chunk)
        parts.append({"name": part.name, "bytes": len(chunk), "sha256": _sha256(chunk)})
    manifest = {"run": run.name, "compact": compact, "bytes": len(data), "sha256": _sha256(data), "parts": parts}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return [dest / p["name"] for p in parts]


def unpack(src: Path, run: Path) -> list[Path]:
    """Check the parts in ``src`` against its manifest and extract them into ``run`` (which must be empty)."""
    try:
        manifest = json.loads((src / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"carry_run: {src / MANIFEST}: {exc}") from None
    if run.exists() and any(run.iterdir()):
        raise SystemExit(f"carry_run: {run} already holds files; unpack into an empty or new folder")
    chunks = []
    for p in manifest["parts"]:
        chunk = (src / p["name"]).read_bytes()
        if len(chunk) != p["bytes"] or _sha256(chunk) != p["sha256"]:
            raise SystemExit(f"carry_run: {src / p['name']} does not match the manifest (damaged or from another pack)")
        chunks.append(chunk)
    data = b"".join(chunks)
    if _sha256(data) != manifest["sha256"]:
        raise SystemExit(f"carry_run: the parts in {src} do not add up to the packed run")
    run.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(run, filter="data")  # "data" refuses absolute paths and links out of the folder
        out = [run / m.name for m in tar.getmembers() if m.isfile()]
    for i, path in enumerate(out):
        if path.name.endswith(COMPACT):
            import torch

            from colorgan.train.checkpoint import save_checkpoint

            full = path.with_name(path.name[: -len(COMPACT)])
            save_checkpoint(expand_checkpoint(torch.load(path, map_location="cpu", weights_only=True)), full)
            path.unlink()
            out[i] = full
            print(f"carry_run: {full} was expanded from a compact pack: the resume is close to, not the same as, an uninterrupted run")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="run folder -> parts")
    p.add_argument("run", type=Path)
    p.add_argument("dest", type=Path)
    p.add_argument("--compact", action="store_true", help="float16 weights, no guided copy, Adam moments reduced to their scale")
    u = sub.add_parser("unpack", help="parts -> run folder")
    u.add_argument("src", type=Path)
    u.add_argument("run", type=Path)
    a = ap.parse_args(argv)
    if a.cmd == "pack":
        parts = pack(a.run, a.dest, compact=a.compact)
        print(f"packed {a.run} into {len(parts)} part(s) in {a.dest}")
    else:
        files = unpack(a.src, a.run)
        print(f"unpacked {len(files)} file(s) into {a.run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
