"""Cold `jrsearch query "TEXT"` latency: fresh processes back to back, torch-free path vs the torch path.

    python -m jrsearch.benchmarks.cold_query --runs 15 --normal-runs 5
    python -m jrsearch.benchmarks.cold_query --models ViT-B-32,xlm-roberta-base-ViT-B-32-shape --normal-runs 0

Builds one library per model with `jrsearch index --pretrained none` (random weights cost the
same as trained ones) over captions and a few images, then times whole processes of
`python -m jrsearch.cli.main query TEXT --library L` (the fast path) and the same with `--device cpu`
(an override, so the unchanged torch path). One warm-up run each first: "cold" means a fresh
process with the library already indexed and its files in the page cache. Prints and saves
JSON (median, p95, every run, the load average) under --out.

Model names may also be the configs in benchmarks/model_configs (e.g. `xlm-roberta-base-ViT-B-32-shape`:
xlm-roberta-base-ViT-B-32's exact shapes, built from a local config because transformers cannot fetch
xlm-roberta-base's offline); `index` and the torch path register them, the fast path needs no registry.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jrsearch.benchmarks.fresh_process import byte_compile_jrsearch

REPO = Path(__file__).resolve().parents[1]
CAPTIONS = REPO.parent / "shared" / "data" / "coco-karpathy-test" / "captions.tsv"
MODEL_CONFIGS = Path(__file__).resolve().parent / "model_configs"
WITH_CONFIGS = ("import sys; from pathlib import Path; "
                "from jrsearch.retrieval.encoders.openclip import register_model_configs; "
                f"register_model_configs(Path({str(MODEL_CONFIGS)!r})); from jrsearch.cli.main import main; "
                "sys.argv[0] = 'jrsearch'; main()")
QUERIES = ["a dog on a beach", "two people riding bikes down a street", "a plate of food on a table",
           "a red double decker bus", "a cat sleeping on a laptop keyboard"]


def captions(count: int) -> list[str]:
    if CAPTIONS.is_file():
        with CAPTIONS.open(newline="") as handle:
            return [row["caption"] for row in itertools.islice(csv.DictReader(handle, delimiter="\t"), count)]
    return [f"caption {i}: {QUERIES[i % len(QUERIES)]}" for i in range(count)]


def cli(*args: str, configs: bool = False) -> subprocess.CompletedProcess:
    """`jrsearch ARGS` in a fresh process; `configs` registers benchmarks/model_configs first (imports torch)."""
    command = ["-c", WITH_CONFIGS] if configs else ["-m", "jrsearch.cli.main"]
    return subprocess.run([sys.executable, *command, *args], cwd=REPO, capture_output=True, text=True, check=True)


def build_library(root: Path, model: str, texts: list[str], images: int) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from helpers import make_image

    root.mkdir(parents=True, exist_ok=True)
    (root / "caps.txt").write_text("\n".join(texts) + "\n")
    for i in range(images):
        make_image(root / "photos" / f"img{i:03d}.jpg", seed=i)
    library = root / "lib"
    if (library / "query_model" / "meta.json").is_file():
        return library  # built by an earlier run (--work)
    cli("index", str(root / "caps.txt"), str(root / "photos"), "--model", model, "--pretrained", "none",
        "--library", str(library), "--json", configs=True)
    return library


def time_queries(library: Path, runs: int, extra: list[str]) -> tuple[list[float], list[float]]:
    """Wall seconds and CPU seconds (user + sys) of `runs` fresh query processes, after one warm-up.

    CPU time is the figure that holds on a busy machine: wall time there includes waiting for a core.
    """
    wall, cpu = [], []
    for run in range(runs + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        cli("query", QUERIES[run % len(QUERIES)], "--library", str(library), *extra, configs=bool(extra))
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if run:
            wall.append(time.perf_counter() - started)
            cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return wall, cpu


def summary(times: tuple[list[float], list[float]]) -> dict:
    wall, cpu = times
    ordered = sorted(wall)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]  # nearest rank
    return {"median_s": round(statistics.median(ordered), 3), "p95_s": round(p95, 3), "min_s": round(ordered[0], 3),
            "max_s": round(ordered[-1], 3), "cpu_median_s": round(statistics.median(cpu), 3),
            "runs_s": [round(t, 3) for t in wall], "cpu_runs_s": [round(t, 3) for t in cpu]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="ViT-B-32,tiny-test", help="Comma-separated open_clip model names.")
    parser.add_argument("--runs", type=int, default=15, help="Fast-path processes per model.")
    parser.add_argument("--normal-runs", type=int, default=5, help="Torch-path processes per model (slow).")
    parser.add_argument("--captions", type=int, default=1000)
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--out", type=Path, default=REPO / "results")
    parser.add_argument("--work", type=Path, help="Keep the libraries here and reuse them (default: a temp dir).")
    args = parser.parse_args()
    byte_compile_jrsearch()

    models: dict[str, dict] = {}
    report: dict = {"machine": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_before": os.getloadavg(),
              "models": models}
    texts = captions(args.captions)
    with tempfile.TemporaryDirectory(prefix="jrsearch-cold-") as tmp:
        tmp = args.work or tmp
        for model in args.models.split(","):
            library = build_library(Path(tmp) / model, model, texts, args.images)
            paths = {"fast": (args.runs, []), "normal": (args.normal_runs, ["--device", "cpu"])}
            stats_by_path = {name: summary(time_queries(library, runs, extra))
                             for name, (runs, extra) in paths.items() if runs > 0}
            models[model] = {**stats_by_path, "captions": len(texts), "images": args.images}
            for name, stats in stats_by_path.items():
                runs = paths[name][0]
                print(f"{model:10} {name:6} median {stats['median_s']:.3f} s  p95 {stats['p95_s']:.3f} s  "
                      f"cpu {stats['cpu_median_s']:.3f} s  ({runs} runs)", flush=True)
    report["load_after"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"cold_query_{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"load average {report['load_before'][0]:.1f} -> {report['load_after'][0]:.1f}; saved {path}")


if __name__ == "__main__":
    main()
