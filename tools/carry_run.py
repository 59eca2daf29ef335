"""Carry a training run folder from one machine to the next through git, in parts of at most 25 MB.

The default recipe takes many hours on a 2-core CPU, longer than one working session, and a session
may end on a machine whose ``runs/`` folder is gone the next time. ``colorgan train --resume`` needs
the run folder exactly as it was (the checkpoint holds the generator, the optimiser moments and the
random-number state, so a resumed run ends where an uninterrupted one would). This tool packs the
folder into an uncompressed tar split into parts small enough to commit, with a manifest of SHA-256
sums, and unpacks it again, refusing a part whose sum does not match::

    python tools/carry_run.py pack runs/default training/carry/default     # at the end of a session
    python tools/carry_run.py unpack training/carry/default runs/default   # at the start of the next
    colorgan train --config configs/default.toml --out runs/default --resume

Stop the run first (Ctrl-C or SIGINT: the stage writes a checkpoint on the way out), so that the
packed log and checkpoint agree. ``pack`` replaces what was in the destination folder; ``unpack``
refuses to write into a run folder that already holds files.
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


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack(run: Path, dest: Path, part_bytes: int = PART_BYTES) -> list[Path]:
    """Pack every file under ``run`` into ``dest/part-NNN`` (each at most ``part_bytes``) and a manifest."""
    if not run.is_dir():
        raise SystemExit(f"carry_run: {run} is not a folder")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in run.rglob("*") if p.is_file() and not p.name.endswith(".tmp")):
            tar.add(path, arcname=str(path.relative_to(run)), recursive=False)
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
    manifest = {"run": run.name, "bytes": len(data), "sha256": _sha256(data), "parts": parts}
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
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(run, filter="data")  # "data" refuses absolute paths and links out of the folder
        out = [run / m.name for m in tar.getmembers() if m.isfile()]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="run folder -> parts")
    p.add_argument("run", type=Path)
    p.add_argument("dest", type=Path)
    u = sub.add_parser("unpack", help="parts -> run folder")
    u.add_argument("src", type=Path)
    u.add_argument("run", type=Path)
    a = ap.parse_args(argv)
    if a.cmd == "pack":
        parts = pack(a.run, a.dest)
        print(f"packed {a.run} into {len(parts)} part(s) in {a.dest}")
    else:
        files = unpack(a.src, a.run)
        print(f"unpacked {len(files)} file(s) into {a.run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
