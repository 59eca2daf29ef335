"""Load test of ``colorgan serve``: concurrent clients on loopback against the real server.

Starts ``python -m colorgan serve`` (the shipped default model unless ``--weights``) in a
subprocess on 127.0.0.1, makes a ~1-megapixel grey JPEG from a photo in ``examples/``, and runs
``--clients`` threads that each send ``--requests`` requests one after another. Prints the
latency percentiles, failures, throughput and the server's memory (VmRSS and VmHWM from
``/proc/PID/status``) after start-up, after one warm-up request and after the run.

Exit status 1 if any request failed or the server's RSS grew by more than ``--max-growth-mb``
(default 200) from the warm-up to the end of the run; timings are printed, never gated on.

    python benchmarks/web_load.py                      # 20 clients x 10 requests, 1 worker
    python benchmarks/web_load.py --workers 2 --clients 20 --requests 10
"""

from __future__ import annotations

import argparse
import io
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def make_photo(path: Path, megapixels: float) -> tuple[bytes, tuple[int, int]]:
    """A grey JPEG of about ``megapixels`` from a sample photo (aspect kept)."""
    with Image.open(path) as im:
        grey = im.convert("L")
    scale = (megapixels * 1e6 / (grey.width * grey.height)) ** 0.5
    size = (round(grey.width * scale), round(grey.height * scale))
    grey = grey.resize(size, Image.LANCZOS)
    buf = io.BytesIO()
    grey.save(buf, "JPEG", quality=90)
    return buf.getvalue(), size


def proc_memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) of a process, in MB (Linux /proc)."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024.0
    return out


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q / 100.0
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "colorgan", "serve", "--host", "127.0.0.1", "--port", "0", "--quiet",
           "--device", "cpu", "--workers", str(args.workers), "--queue-size", str(args.queue_size)]
    if args.weights:
        cmd += ["--weights", str(args.weights)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    assert proc.stderr is not None
    line = proc.stderr.readline()
    m = re.search(r"serving on (http://127\.0\.0\.1:\d+/)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"the server did not start: {line}{proc.stderr.read()}")
    # Keep draining stderr so the server can never block on a full pipe; show warnings.
    threading.Thread(target=lambda: [sys.stderr.write("server: " + ln) for ln in proc.stderr], daemon=True).start()
    url = m.group(1)
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(url + "api/health", timeout=5).json().get("status") == "ok":
                return proc, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit("the server did not become healthy")
        time.sleep(0.1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--requests", type=int, default=10, help="requests per client, one after another")
    ap.add_argument("--workers", type=int, default=1, help="the server's --workers")
    ap.add_argument("--queue-size", type=int, default=32, help="the server's --queue-size")
    ap.add_argument("--render-size", type=int, default=256)
    ap.add_argument("--format", default="png", choices=["png", "jpeg"])
    ap.add_argument("--megapixels", type=float, default=1.0)
    ap.add_argument("--photo", type=Path, default=ROOT / "examples" / "nipomo-migrant-mother-1936.jpg")
    ap.add_argument("--weights", type=Path, default=None, help="default: the shipped model")
    ap.add_argument("--max-growth-mb", type=float, default=200.0)
    args = ap.parse_args()

    photo, size = make_photo(args.photo, args.megapixels)
    print(f"photo: {args.photo.name} as grey JPEG {size[0]}x{size[1]} ({size[0] * size[1] / 1e6:.2f} MP, {len(photo) / 1e3:.0f} kB)")
    print(f"load: {args.clients} clients x {args.requests} requests, render {args.render_size}, {args.format}; "
          f"server --workers {args.workers} --queue-size {args.queue_size}; {os.cpu_count()} CPUs; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")

    proc, url = start_server(args)
    try:
        mem_start = proc_memory_mb(proc.pid)
        fields = {"render_size": str(args.render_size), "format": args.format}
        warm = httpx.post(url + "api/colorize", files={"file": ("photo.jpg", photo)}, data=fields, timeout=300)
        if warm.status_code != 200:
            raise SystemExit(f"warm-up request failed: {warm.status_code} {warm.text[:200]}")
        time.sleep(0.5)
        mem_warm = proc_memory_mb(proc.pid)

        latencies: list[float] = []
        server_ms: list[float] = []
        failures: list[str] = []
        lock = threading.Lock()
        barrier = threading.Barrier(args.clients)

        def client(i: int) -> None:
            with httpx.Client(timeout=600) as c:
                barrier.wait()  # all clients start together
                for _ in range(args.requests):
                    t0 = time.perf_counter()
                    try:
                        r = c.post(url + "api/colorize", files={"file": (f"photo{i}.jpg", photo)}, data=fields)
                        ok = r.status_code == 200 and len(r.content) > 0
                        why = f"{r.status_code} {r.text[:120]}" if not ok else ""
                    except httpx.HTTPError as e:
                        ok, why = False, f"{type(e).__name__}: {e}"
                    took = time.perf_counter() - t0
                    with lock:
                        if ok:
                            latencies.append(took)
                            server_ms.append(float(r.headers["x-processing-time-ms"]))
                        else:
                            failures.append(why)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        time.sleep(1.0)  # let the server finish its bookkeeping before reading its memory
        mem_end = proc_memory_mb(proc.pid)
        health = httpx.get(url + "api/health", timeout=10).json()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()

    total = args.clients * args.requests
    growth = mem_end["VmRSS"] - mem_warm["VmRSS"]
    print(f"requests: {total}, ok {len(latencies)}, failed {len(failures)}")
    for why in sorted(set(failures))[:5]:
        print(f"  failure: {why}")
    if latencies:
        print(f"latency (client, s): p50 {percentile(latencies, 50):.2f}  p95 {percentile(latencies, 95):.2f}  "
              f"p99 {percentile(latencies, 99):.2f}  max {max(latencies):.2f}  mean {statistics.mean(latencies):.2f}")
        print(f"processing (server worker, ms): p50 {percentile(server_ms, 50):.0f}  p95 {percentile(server_ms, 95):.0f}")
    print(f"throughput: {len(latencies) / wall:.2f} req/s ({wall:.1f} s wall)")
    print(f"server queue: {health['queue']}")
    print(f"server RSS (MB): after start-up {mem_start['VmRSS']:.0f}, after warm-up {mem_warm['VmRSS']:.0f}, "
          f"after the run {mem_end['VmRSS']:.0f} (peak {mem_end['VmHWM']:.0f}); "
          f"growth over the run {growth:+.0f} MB (limit {args.max_growth_mb:.0f}), "
          f"since start-up {mem_end['VmRSS'] - mem_start['VmRSS']:+.0f} MB")
    ok = not failures and growth <= args.max_growth_mb
    print("RESULT:", "PASS" if ok else "FAIL", "(zero failed requests, memory growth within the limit)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
