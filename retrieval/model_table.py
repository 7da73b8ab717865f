"""The models `jrsearch models` lists: open_clip's published quality figures (model_table.json, data
with its sources) joined with what `benchmarks/models.py` measured on this project's machines.

Quality: ImageNet-1k zero-shot top-1 and MSCOCO / Flickr text->image recall@k as open_clip publishes
them (MobileCLIP2: ImageNet only, as Apple publishes it). Fast path: "measured" where the benchmark
ran the model on ONNX Runtime / OpenVINO, "expected" for the tower families the tests export (CLIP's BPE
tokenizer), "no" for a Hugging Face tokenizer (SigLIP, multilingual: their images run on torch),
"untested" for towers near ONNX's 2 GB file limit.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

TABLE = Path(__file__).parent / "model_table.json"
MEASURED = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "models.json"
LARGE_PARAMS_M = 900  # total parameters from which a tower may pass ONNX's 2 GB protobuf limit untested


@dataclass(frozen=True)
class ModelEntry:
    """One architecture and pretrained tag: published quality, embedding size, fast path, measured cost."""

    model: str
    pretrained: str
    imagenet: float | None
    coco_t2i_r5: float | None
    flickr_t2i_r5: float | None
    params_m: float | None
    embed_dim: int
    fast_path: str
    cpu_s_per_image: float | None = None
    cpu_s_per_query: float | None = None
    export_s: float | None = None
    export_peak_rss_mib: float | None = None

    def to_json(self) -> dict:
        return asdict(self)


def _fast_path(row: dict, measured: dict | None) -> str:
    if measured is not None:
        backend = measured.get("warm", {}).get("backend")
        return "measured" if backend in ("onnx", "openvino") else f"no (measured on {backend or 'nothing'})"
    if row["tokenizer"] == "hf-text-model":
        return "no (Hugging Face text model: images on torch)"
    if row["tokenizer"] == "hf":
        return "untested (Hugging Face tokenizer, e.g. SigLIP)"
    if (row["params_m"] or 0) >= LARGE_PARAMS_M:
        return "untested"
    return "expected"


def measured_costs(path: Path = MEASURED) -> dict[str, dict]:
    """benchmarks/models.py's results by model name ({} where it has not run)."""
    try:
        models = json.loads(path.read_text()).get("models", {})
    except (OSError, ValueError):
        return {}
    return models if isinstance(models, dict) else {}


def entries(measured_path: Path = MEASURED) -> list[ModelEntry]:
    """Every listed model and tag, best ImageNet figure first."""
    table = json.loads(TABLE.read_text())
    measured = measured_costs(measured_path)
    out = []
    for row in table["rows"]:
        cost = measured.get(row["model"])
        warm, export = (cost or {}).get("warm", {}), (cost or {}).get("export", {})
        out.append(ModelEntry(
            model=row["model"], pretrained=row["pretrained"], imagenet=row["imagenet"],
            coco_t2i_r5=row["coco_t2i_r5"], flickr_t2i_r5=row["flickr_t2i_r5"], params_m=row["params_m"],
            embed_dim=row["embed_dim"], fast_path=_fast_path(row, cost),
            cpu_s_per_image=warm.get("cpu_s_per_image"), cpu_s_per_query=warm.get("cpu_s_per_query"),
            export_s=export.get("wall_s"), export_peak_rss_mib=export.get("peak_rss_mib")))
    return out


def sources() -> dict[str, str]:
    return dict(json.loads(TABLE.read_text())["sources"])
