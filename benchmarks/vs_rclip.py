"""`jrsearch index` against rclip on the same JPEGs and weights, back to back, several rounds.

    python -m jrsearch.benchmarks.vs_rclip --corpus /tmp/corpus --rclip-data /tmp/rclipdata \\
        --rclip-python /path/to/rclip-venv/bin/python [--rounds 3] [--precisions fp32,bf16,int8]

Prepare the corpus and weights with the peers harness (`../shared/peers/README.md`: make_corpus.py,
rclip_models.py). Each round runs, one after the other, on an idle machine:
  * rclip: `../shared/peers/rclip_speed.py` (its index wall and cold query, from rclip's venv);
  * jrsearch: `jrsearch index CORPUS/images` into a fresh library for each precision, from a
    fresh process, with the model's export already in the model cache (as after a first run);
    then, on the fp32 library, a re-run with nothing changed and the cold `jrsearch query`.
Speed ratios are taken within a round, so the machine's drift hits both tools alike.
Prints and saves JSON with every round and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jrsearch.benchmarks.fresh_process import byte_compile_jrsearch
from jrsearch.benchmarks.output import print_and_save

CHECKPOINT = "vit_b32_256_random.pt"  # written by the peers' rclip_models.py
MODEL = "ViT-B-32-256"
QUERY = "a dog on a beach"


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd[:3])} ... failed: {done.stderr.strip()[-400:]}")
    return time.perf_counter() - start


def jrsearch_round(images: Path, checkpoint: Path, precisions: list[str], env: dict[str, str]) -> dict:
    jrsearch = str(Path(sys.executable).parent / "jrsearch")
    count = len(list(images.glob("*.jpg")))
    row: dict = {}
    with tempfile.TemporaryDirectory(prefix="vs-rclip-") as tmp:
        for precision in precisions:
            library = str(Path(tmp) / precision)
            wall = timed([jrsearch, "index", str(images), "--library", library, "--model", MODEL,
                          "--checkpoint", str(checkpoint), "--precision", precision], env)
            row[f"{precision}_images_per_s"] = count / wall
        library = str(Path(tmp) / precisions[0])
        row["rerun_s"] = timed([jrsearch, "index", str(images), "--library", library], env)
        row["cold_query_s"] = statistics.median(
            timed([jrsearch, "query", QUERY, "--library", library, "--top-k", "3"], env) for _ in range(5))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, required=True, help="make_corpus.py's folder (holds images/)")
    parser.add_argument("--rclip-data", type=Path, required=True, help="rclip_models.py's folder")
    parser.add_argument("--rclip-python", type=Path, required=True, help="python of a venv with rclip 3.3.0")
    parser.add_argument("--peers", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "peers")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precisions", default="fp32,bf16,int8")
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args()
    byte_compile_jrsearch()
    precisions = args.precisions.split(",")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    checkpoint = args.rclip_data / CHECKPOINT
    # The first jrsearch run exports the model into the cache; the rounds measure later runs.
    jrsearch_round(args.corpus / "images", checkpoint, precisions, env)
    rounds = []
    for _ in range(args.rounds):
        load = os.getloadavg()[0]
        rclip = subprocess.run([str(args.rclip_python), str(args.peers / "rclip_speed.py"), str(args.corpus),
                                str(args.rclip_data)], env=env, capture_output=True, text=True, check=True)
        peer = json.loads(rclip.stdout.strip().splitlines()[-1])
        row = {"loadavg_1min": load, "rclip_images_per_s": peer["images_per_s"],
               "rclip_cold_query_s": peer["cold_query_s_median"],
               **jrsearch_round(args.corpus / "images", checkpoint, precisions, env)}
        for precision in precisions:
            row[f"{precision}_x_rclip"] = row[f"{precision}_images_per_s"] / row["rclip_images_per_s"]
        rounds.append({k: round(v, 3) for k, v in row.items()})
        print(json.dumps(rounds[-1]), flush=True)
    result = {"benchmark": "vs_rclip", "model": f"{MODEL} random init", "rclip": peer["peer"],
              "images": len(list((args.corpus / "images").glob("*.jpg"))), "rounds": rounds,
              **{f"median_{k}": round(statistics.median(r[k] for r in rounds), 3) for k in rounds[0]},
              "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    print_and_save(result, args.out, "vs_rclip")


if __name__ == "__main__":
    main()
