"""The README's main-job install, measured: a fresh venv, `pip install CHECKOUT[EXTRAS]`, its size on
disk, the wall time, and the largest packages.

    python -m jrsearch.benchmarks.install_size                 # the base install (the README's)
    python -m jrsearch.benchmarks.install_size --extras openvino

Downloads come from the configured index (or pip's cache: pass --no-cache for a cold one). Saves
JSON under --out (install-size-EXTRAS.json).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jrsearch.benchmarks.output import print_and_save

REPO = Path(__file__).resolve().parents[1]


def tree_bytes(root: Path) -> int:
    """Bytes on disk (allocated blocks, as `du` counts them) under `root`, each inode once."""
    seen: set[int] = set()
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            stat = os.lstat(os.path.join(folder, name))
            if stat.st_ino not in seen:
                seen.add(stat.st_ino)
                total += stat.st_blocks * 512
    return total


def measure(extras: str, no_cache: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="jrsearch-install-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        target = f"{REPO}[{extras}]" if extras else str(REPO)
        started = time.perf_counter()
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *(["--no-cache-dir"] if no_cache else []),
                        target], check=True, cwd=tmp)
        seconds = time.perf_counter() - started
        site = next((venv / "lib").glob("python*/site-packages"))
        packages = sorted(((tree_bytes(p), p.name) for p in site.iterdir() if p.is_dir()), reverse=True)
        has = {m: (site / m).is_dir() for m in ("torch", "open_clip", "openvino", "onnxruntime", "faiss")}
        return {"extras": extras, "install_s": round(seconds, 1), "venv_mb": round(tree_bytes(venv) / 2**20),
                "largest_mb": {name: round(size / 2**20) for size, name in packages[:12]}, "installed": has,
                "python": platform.python_version(), "machine": platform.machine(), "no_cache": no_cache,
                "load_average": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", default="", help="extras to install, e.g. openvino or torch,openvino")
    parser.add_argument("--no-cache", action="store_true", help="pip --no-cache-dir (downloads everything)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    result = measure(args.extras, args.no_cache)
    print_and_save(result, args.out, f"install-size-{args.extras.replace(',', '-') or 'base'}")


if __name__ == "__main__":
    main()
