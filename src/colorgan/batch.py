"""Pipelined colourisation of many files, and sharding of a file list across processes.

:func:`run_jobs` keeps every stage of a folder run busy at once::

    reader threads            main thread                  writer threads
    decode + L  ──(bounded)──► batch by render shape ──(bounded)──► upsample ab, merge with L,
    (io.load_image)            run the network                  encode, atomic write (io.save_image)

Decoding, the colour maths at full resolution and encoding release the GIL (Pillow, numpy and
torch all do), so threads overlap them with the network on other cores. At most ``prefetch``
decoded images wait for the network and at most ``2 * workers`` finished ones wait for their
writer, so memory stays flat however many files there are. Every file's failure is reported
and counted; the others go on. ``workers=0`` runs the same stages one after another in the
calling thread (the sequential reference; its outputs are the same, see ``tests/test_batch.py``).

Sharding (:func:`shard_of`, :func:`parse_shard`, :func:`shard_from_env`) splits a sorted job list
into N disjoint parts by index (``i % N == K``), so N processes started by ``torchrun`` (which sets
``RANK`` and ``WORLD_SIZE``), a SLURM array or GNU parallel each do their own part with no
communication, and a re-run after a failure does only the outputs still missing.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence, TypeVar

import numpy as np

from colorgan.errors import ColorGANError, ImageLoadError

__all__ = ["FileJob", "BatchResult", "run_jobs", "shard_of", "parse_shard", "shard_from_env"]

T = TypeVar("T")


@dataclass(frozen=True)
class FileJob:
    """One input file and where its output(s) go.

    Attributes:
        source: the image file to colourise (never modified).
        output: the colour image to write.
        compare: where to write the side-by-side (original | colour) image, or None.
        hints: a hints JSON file with colour points for this image (:mod:`colorgan.hints`), or None.
        reference: a colour photo whose colours this image takes where they match, or None.
    """

    source: Path
    output: Path
    compare: Path | None = None
    hints: Path | None = None
    reference: Path | None = None


@dataclass
class BatchResult:
    """What :func:`run_jobs` did: counts, and the failures as one-line messages."""

    done: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class _Decoded:
    job: FileJob
    L: object  # torch.Tensor (1, 1, H, W), L in [0, 100]
    alpha: np.ndarray | None
    bit_depth: int
    exif: bytes | None
    icc: bytes | None
    kind: str
    original: np.ndarray | None  # (H, W, 3) float32 RGB, kept only for --compare
    hints: list | None = None  # the image's colour points (colorgan.hints.ColourPoint), checked
    reference: object = None  # torch.Tensor (1, 3, H', W') sRGB of its reference photo, or None


class _Inline:
    """The executor interface run synchronously (``workers=0``): the sequential reference."""

    def submit(self, fn: Callable[..., T], *args: object) -> "Future[T]":
        fut: Future[T] = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001 - handed to the caller through the future
            fut.set_exception(e)
        return fut

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def run_jobs(
    jobs: Sequence[FileJob],
    colorizer: "object",
    *,
    render_size: int = 256,
    batch_size: int = 4,
    workers: int = 2,
    prefetch: int | None = None,
    max_pixels: int | None = None,
    quality: int = 95,
    inputs: Iterable[str | os.PathLike] = (),
    report: Callable[[str], None] = print,
    on_file: Callable[[FileJob, bool], None] | None = None,
) -> BatchResult:
    """Colourise ``jobs`` with decoding, inference and encoding overlapped.

    Args:
        jobs: the files to do (every output is (re)written; skip existing ones before calling).
        colorizer: a :class:`colorgan.pipeline.Colorizer` (PyTorch or ONNX backend).
        render_size: short side the network sees (64-2048).
        batch_size: images per forward pass (images with the same render shape are batched).
        workers: reader threads and, as many again, writer threads; 0 runs everything in the
            calling thread, one stage after another.
        prefetch: decoded images allowed to wait for the network (default ``2 * batch_size``).
        max_pixels: refuse larger images (None: :data:`colorgan.io.DEFAULT_MAX_PIXELS`).
        quality: JPEG/WebP quality of the outputs.
        inputs: real paths of all inputs of the run; writing onto any of them is refused.
        report: called with one line per failure (``error: FILE: reason``) or warning; always
            from the calling thread.
        on_file: called as ``on_file(job, ok)`` when a file is finished (progress bars, logs),
            from the calling thread.

    Returns:
        The counts and error lines.
    """
    from colorgan import io as cio

    result = BatchResult()
    batch_size = max(1, int(batch_size))
    workers = max(0, int(workers))
    prefetch = max(batch_size, int(prefetch) if prefetch else 2 * batch_size)
    max_writes = max(1, 2 * workers)
    input_set = frozenset(str(p) for p in inputs)
    load_kw = {} if max_pixels is None else {"max_pixels": max_pixels}

    def fail(job: FileJob, message: str) -> None:
        result.failed += 1
        result.errors.append(message)
        report(message)
        if on_file is not None:
            on_file(job, False)

    def decode(job: FileJob) -> _Decoded:
        loaded = cio.load_image(job.source, **load_kw)
        prep = colorizer.prepare(loaded)  # type: ignore[attr-defined]
        points = None
        if job.hints is not None:
            from colorgan.hints import HintsError, load_hints

            try:
                points = load_hints(job.hints, size=tuple(prep.L.shape[-2:])) or None
            except HintsError as e:
                raise HintsError(f"{job.source}: {e}") from None
        reference = None
        if job.reference is not None:
            try:
                reference = colorizer.prepare_reference(job.reference)  # type: ignore[attr-defined]
            except (ValueError, ImageLoadError) as e:  # unreadable, or grey: this photo fails, not the run
                raise ImageLoadError(job.source, f"its reference {e}") from None
        return _Decoded(
            hints=points,
            reference=reference,
            job=job,
            L=prep.L,
            alpha=loaded.alpha,
            bit_depth=loaded.bit_depth,
            exif=loaded.exif,
            icc=loaded.icc_profile,
            kind=loaded.kind,
            # The full-resolution float RGB (12 bytes a pixel) is dropped unless --compare needs it.
            original=loaded.rgb if job.compare is not None else None,
        )

    def encode(item: _Decoded, ab: object) -> FileJob:
        rgb = colorizer.merge(item.L, ab)  # type: ignore[attr-defined]
        kw = dict(bit_depth=item.bit_depth, exif=item.exif, icc_profile=item.icc, quality=quality,
                  inputs=input_set, overwrite=True)
        cio.save_image(item.job.output, rgb, alpha=item.alpha, **kw)
        if item.job.compare is not None and item.original is not None:
            side = np.concatenate([item.original.astype(np.float32, copy=False), rgb], axis=1)
            cio.save_image(item.job.compare, side, **kw)
        return item.job

    readers = ThreadPoolExecutor(workers, thread_name_prefix="colorgan-read") if workers else _Inline()
    writers = ThreadPoolExecutor(workers, thread_name_prefix="colorgan-write") if workers else _Inline()
    loads: deque[tuple[FileJob, Future[_Decoded]]] = deque()
    writes: deque[tuple[FileJob, Future[FileJob]]] = deque()
    pending = iter(jobs)

    def fill() -> None:
        while len(loads) < prefetch:
            job = next(pending, None)
            if job is None:
                return
            loads.append((job, readers.submit(decode, job)))

    def outcome(job: FileJob, fut: "Future[T]", doing: str) -> "T | None":
        """The future's result, or None after reporting the job failed (``doing``: decode, write)."""
        try:
            return fut.result()
        except ColorGANError as e:
            fail(job, f"error: {e}")
        except MemoryError:
            fail(job, f"error: {job.source}: not enough memory to {doing} this image")
        return None

    def finish_write(job: FileJob, fut: "Future[FileJob]") -> None:
        if outcome(job, fut, "write") is None:
            return
        result.done += 1
        if on_file is not None:
            on_file(job, True)

    def flush(batch: list[_Decoded]) -> None:
        if not batch:
            return
        try:
            hints, refs = [it.hints for it in batch], [it.reference for it in batch]
            guided: dict = {}  # only when given: any colorizer-like object serves automatic runs
            if any(hints):
                guided["hints"] = hints
            if any(r is not None for r in refs):
                guided["references"] = refs
            abs_ = colorizer.predict_ab_batch([it.L for it in batch], render_size, **guided)  # type: ignore[attr-defined]
        except (ColorGANError, MemoryError) as e:
            reason = str(e) if isinstance(e, ColorGANError) else "not enough memory"
            for it in batch:
                fail(it.job, f"error: {it.job.source}: {reason}")
            batch.clear()
            return
        for it, ab in zip(batch, abs_):
            while len(writes) >= max_writes:
                finish_write(*writes.popleft())
            writes.append((it.job, writers.submit(encode, it, ab)))
        batch.clear()

    batch: list[_Decoded] = []
    try:
        fill()
        while loads:
            job, fut = loads.popleft()
            fill()
            item = outcome(job, fut, "decode")
            if item is None:
                continue
            if item.kind == "colour":
                report(f"warning: {job.source}: already in colour; only its luminance is used")
            batch.append(item)
            if len(batch) >= batch_size:
                flush(batch)
            # Finished writes are collected as they come, so progress is reported promptly.
            while writes and writes[0][1].done():
                finish_write(*writes.popleft())
        flush(batch)
        while writes:
            finish_write(*writes.popleft())
    finally:
        # On an error or Ctrl-C: queued work is dropped, running work ends (writes are atomic).
        readers.shutdown(wait=True, cancel_futures=True)
        writers.shutdown(wait=True, cancel_futures=True)
    return result


# ------------------------------------------------------------------------------------ sharding


def shard_of(items: Sequence[T], index: int, count: int) -> list[T]:
    """The items whose position ``i`` satisfies ``i % count == index``.

    Positions interleave, so every shard gets a similar mix of the list (files of one folder,
    which tend to have similar sizes, are spread over all shards).
    """
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard index must be in [0, {count}), got {index}")
    return list(items[index::count])


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> ``(K, N)`` with ``0 <= K < N``.

    Raises:
        ValueError: any other text.
    """
    try:
        k_text, n_text = text.split("/")
        k, n = int(k_text), int(n_text)
    except ValueError:
        raise ValueError(f"a shard is K/N (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= k < n:
        raise ValueError(f"a shard K/N needs 0 <= K < N, got {text!r}")
    return k, n


def shard_from_env(environ: "os._Environ[str] | dict[str, str] | None" = None) -> tuple[int, int] | None:
    """``(RANK, WORLD_SIZE)`` when a launcher such as ``torchrun`` set them, else None.

    Raises:
        ValueError: the variables are set but do not form a valid shard.
    """
    env = os.environ if environ is None else environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    except ValueError:
        raise ValueError(f"RANK={env['RANK']!r} and WORLD_SIZE={env['WORLD_SIZE']!r} must be integers") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} must be in [0, WORLD_SIZE={world})")
    return rank, world
