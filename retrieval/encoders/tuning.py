"""Which runtime and batch size embed images fastest on this machine: measured once per export,
precision and machine, and kept beside the export (`TUNING`).

ONNX Runtime and OpenVINO run the same export, and which is faster, at which batch size, depends on
the CPU. On the project's 2-core VMs, forward-only, back to back: OpenVINO fp32 was 1.15x ONNX
Runtime (both at batches of 32) on an Intel Xeon with AMX and 1.05x on an AMD EPYC with AVX-512;
on an AMD EPYC with AVX2 only, ONNX Runtime at batches of 8 was 1.10x its own batches of 32 and
OpenVINO's (README "Speed"). So `fastest` times every candidate on the same random images,
interleaved over `ROUNDS` rounds, and keeps each candidate's best round: the one least disturbed by
other work on the machine.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jrsearch.retrieval.fileio import keep_json_entry, read_json_object

if TYPE_CHECKING:
    from jrsearch.retrieval.encoders.onnx import OnnxClipEncoder

TUNING = "tuning.json"
BATCHES = {"onnx": (8, 16), "openvino": (16,)}  # the candidates per runtime; OpenVINO splits a batch across its streams
DEFAULT_BATCH = 32  # where nothing was measured
TUNE_IMAGES = 16
ROUNDS = 3


def machine_key(precision: str, runtimes: list[str]) -> str:
    """What a measurement holds for: this CPU, the threads it may use, the precision and the
    runtimes that were compared."""
    from jrsearch.retrieval.encoders.onnx import cpu_threads

    return f"{_cpu_name()} | {cpu_threads()} threads | {precision} | {'+'.join(runtimes)}"


def _cpu_name() -> str:
    """The CPU's model name and a digest of its instruction-set flags (VMs often show only a family
    name, such as "AMD EPYC", for CPUs with different vector units)."""
    import hashlib

    with contextlib.suppress(OSError):
        info: dict[str, str] = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())  # the first CPU's lines
        flags = hashlib.sha256(info.get("flags", "").encode()).hexdigest()[:8]
        return f"{info.get('model name') or platform.machine()} (flags {flags})"
    return platform.processor() or platform.machine()


def recorded(folder: Path, key: str) -> dict | None:
    """The choice measured earlier for `key`: {"runtime", "batch", "images_per_s"}, or None."""
    choice = read_json_object(folder / TUNING).get(key)
    if not isinstance(choice, dict):
        return None
    runtime, batch = choice.get("runtime"), choice.get("batch")
    return choice if runtime in BATCHES and isinstance(batch, int) and batch > 0 else None


def fastest(folder: Path, precision: str, openers: dict[str, Callable[[], OnnxClipEncoder | None]]
            ) -> OnnxClipEncoder | None:
    """The encoder, of those `openers` makes (runtime -> opener, in order of preference), set to the
    batch size that embeds images fastest here: as recorded for this machine, else measured now
    and recorded. Nothing is measured where the record cannot be written (a read-only cache): the
    first runtime then runs at `DEFAULT_BATCH`. None where an opener finds no export."""
    key = machine_key(precision, list(openers))
    choice = recorded(folder, key)
    if choice is not None and choice["runtime"] in openers:
        encoder = openers[choice["runtime"]]()
        if encoder is not None:
            encoder.batch_size = choice["batch"]
        return encoder
    encoders = {runtime: open_() for runtime, open_ in openers.items()}
    opened = {runtime: e for runtime, e in encoders.items() if e is not None}
    if len(opened) < len(encoders):
        return None
    first = next(iter(opened.values()))
    if not os.access(folder, os.W_OK):
        first.batch_size = DEFAULT_BATCH
        return first
    if sum(len(BATCHES[runtime]) for runtime in opened) == 1:
        first.batch_size = BATCHES[first.backend][0]
        return first
    speeds = measure(opened)
    runtime, batch = max(speeds, key=speeds.__getitem__)
    encoder = opened[runtime]
    encoder.batch_size = batch
    keep_json_entry(folder / TUNING, key, {"runtime": runtime, "batch": batch,
                          "images_per_s": {f"{r} {b}": round(s, 2) for (r, b), s in speeds.items()}})
    return encoder


def measure(encoders: dict[str, OnnxClipEncoder]) -> dict[tuple[str, int], float]:
    """Images per second of each (runtime, batch) candidate: the best of `ROUNDS` interleaved rounds
    over the same `TUNE_IMAGES` random images, after one untimed batch each."""
    size = next(iter(encoders.values())).preprocess.size
    images = np.random.default_rng(0).standard_normal((TUNE_IMAGES, 3, *size), dtype=np.float32)
    candidates = [(runtime, batch) for runtime in encoders for batch in BATCHES[runtime]]
    for runtime, encoder in encoders.items():
        encoder.encode_images(images[:BATCHES[runtime][0]])  # opens the session; the first run is slow
    best = dict.fromkeys(candidates, 0.0)
    for _ in range(ROUNDS):
        for runtime, batch in candidates:
            encoder = encoders[runtime]
            encoder.batch_size = batch
            started = time.perf_counter()
            encoder.encode_images(images)
            best[runtime, batch] = max(best[runtime, batch], TUNE_IMAGES / (time.perf_counter() - started))
    return best
