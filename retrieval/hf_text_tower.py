"""A Hugging Face text tower (open_clip's `HFTextEncoder`) as plain arrays, for torch-free text queries.

The multilingual open_clip models (`xlm-roberta-base-ViT-B-32`, `xlm-roberta-large-ViT-H-14`, the
shipped `tiny-multilingual`) put an XLM-R encoder where CLIP has its text transformer. `jrsearch
index` writes what a query needs into the same folder as a CLIP tower's export:

    LIBRARY/query_model/meta.json       kind "hf", model spec, layer config, pooler, projection, digest
    LIBRARY/query_model/*.npy           float32 weights (per-layer ones stacked over layers)
    LIBRARY/query_model/tokenizer.json  the model's own tokenizer (run by the `tokenizers` package)

`HfTextTower.encode_texts` runs `encode_text(normalize=True)` in numpy: word + position (RoBERTa
numbering: padding_idx + 1 onwards) + token-type embedding, LayerNorm, post-LN encoder layers
(attention, GELU feed-forward), the mean (or first-token) pooler, the projection (identity, linear
or the two-layer GELU MLP), L2 norm. Padding is masked out in open_clip, so only the real tokens
are computed. Why numpy and not ONNX Runtime: see README "Multilingual search" (measured cold).

Exported: XLM-R / RoBERTa encoders with absolute positions and exact GELU. Anything else (NLLB's
M2M100 encoder, a BERT tower) has no export and its queries take the torch path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jrsearch.retrieval.checksums import check_folder, write_folder_checked
from jrsearch.retrieval.diskspace import disk_full_error, out_of_space
from jrsearch.retrieval.errors import LibraryError
from jrsearch.retrieval.hf_tokenizer import HfTokenizer
from jrsearch.retrieval.query_model import (
    EXPORT_DIR,
    TOKENIZER_FILE,
    TextTower,
    _checkpoint_stamp,
    _erf,
    _layer_norm,
    _read_meta,
    export_text_tower,
)
from jrsearch.retrieval.types import ModelSpec

if TYPE_CHECKING:
    import torch

    from jrsearch.retrieval.encoders.protocol import Encoder

FORMAT = "hf-1"
ARCHITECTURES = ("xlm-roberta", "roberta")
POOLERS = {"MeanPooler": "mean", "ClsLastHiddenStatePooler": "first"}
LAYER_ARRAYS = ("q_w", "q_b", "k_w", "k_b", "v_w", "v_b", "out_w", "out_b", "ln_1_w", "ln_1_b",
                "fc_w", "fc_b", "proj_w", "proj_b", "ln_2_w", "ln_2_b")


def _f32(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()


def _projection(proj: torch.nn.Module) -> tuple[str, list[np.ndarray]] | None:
    """open_clip's text projection as (kind, transposed weights): identity, linear or mlp (no biases)."""
    import torch

    if isinstance(proj, torch.nn.Identity):
        return "identity", []
    if type(proj) is torch.nn.Linear and proj.bias is None:
        return "linear", [_f32(proj.weight).T]
    if (isinstance(proj, torch.nn.Sequential) and len(proj) == 3 and type(proj[0]) is torch.nn.Linear
            and type(proj[1]) is torch.nn.GELU and proj[1].approximate == "none" and type(proj[2]) is torch.nn.Linear
            and proj[0].bias is None and proj[2].bias is None):
        return "mlp", [_f32(proj[0].weight).T, _f32(proj[2].weight).T]
    return None


def _describe(model: Any, tokenizer: Any) -> dict | None:
    """The layer config of a supported HF text tower, or None for anything else."""
    text: Any = getattr(model, "text", None)
    config: Any = getattr(getattr(text, "transformer", None), "config", None)
    backend = getattr(getattr(tokenizer, "tokenizer", None), "backend_tokenizer", None)
    if (config is None or backend is None or bool(getattr(tokenizer, "tokenizer_mode", None))
            or bool(getattr(tokenizer, "strip_sep_token", False))):
        return None
    projection = _projection(text.proj)
    if (config.model_type not in ARCHITECTURES or getattr(config, "position_embedding_type", "absolute") != "absolute"
            or config.hidden_act != "gelu" or getattr(config, "is_decoder", False)
            or type(text.pooler).__name__ not in POOLERS or projection is None
            or getattr(tokenizer.clean_fn, "__name__", "") != "_clean_whitespace"):
        return None
    return {"width": int(config.hidden_size), "heads": int(config.num_attention_heads),
            "layers": int(config.num_hidden_layers), "eps": float(config.layer_norm_eps),
            "pad_id": int(config.pad_token_id), "pooler": POOLERS[type(text.pooler).__name__],
            "projection": projection[0], "context_length": int(tokenizer.context_length)}


def _arrays(model: Any) -> dict[str, np.ndarray]:
    """The weights a query needs, float32, linear weights transposed so that `x @ w` applies them."""
    text = model.text
    embeddings, layers = text.transformer.embeddings, list(text.transformer.encoder.layer)
    per_layer = {
        "q_w": lambda m: _f32(m.attention.self.query.weight).T, "q_b": lambda m: _f32(m.attention.self.query.bias),
        "k_w": lambda m: _f32(m.attention.self.key.weight).T, "k_b": lambda m: _f32(m.attention.self.key.bias),
        "v_w": lambda m: _f32(m.attention.self.value.weight).T, "v_b": lambda m: _f32(m.attention.self.value.bias),
        "out_w": lambda m: _f32(m.attention.output.dense.weight).T,
        "out_b": lambda m: _f32(m.attention.output.dense.bias),
        "ln_1_w": lambda m: _f32(m.attention.output.LayerNorm.weight),
        "ln_1_b": lambda m: _f32(m.attention.output.LayerNorm.bias),
        "fc_w": lambda m: _f32(m.intermediate.dense.weight).T, "fc_b": lambda m: _f32(m.intermediate.dense.bias),
        "proj_w": lambda m: _f32(m.output.dense.weight).T, "proj_b": lambda m: _f32(m.output.dense.bias),
        "ln_2_w": lambda m: _f32(m.output.LayerNorm.weight), "ln_2_b": lambda m: _f32(m.output.LayerNorm.bias),
    }
    arrays = {name: np.stack([get(layer) for layer in layers]) for name, get in per_layer.items()}
    arrays.update(word_embedding=_f32(embeddings.word_embeddings.weight),
                  position_embedding=_f32(embeddings.position_embeddings.weight),
                  token_type_embedding=_f32(embeddings.token_type_embeddings.weight[0]),
                  emb_ln_w=_f32(embeddings.LayerNorm.weight), emb_ln_b=_f32(embeddings.LayerNorm.bias))
    projection = _projection(text.proj)
    assert projection is not None  # _describe accepted this tower
    arrays.update({f"text_proj_{i}": w for i, w in enumerate(projection[1])})
    return {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in arrays.items()}


def _weights_digest(model: Any) -> str:
    """A cheap fingerprint of the text tower's weights (a few small tensors)."""
    text = model.text
    last = text.transformer.encoder.layer[-1]
    digest = hashlib.sha256()
    for tensor in (text.transformer.embeddings.LayerNorm.weight, last.output.dense.bias, last.output.LayerNorm.bias,
                   *list(text.proj.parameters())[:1]):
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def export_hf_text_tower(encoder: Encoder, library_root: Path) -> bool:
    """Write LIBRARY/query_model for an HF text tower unless an up-to-date one is there; False where unsupported."""
    model: Any = getattr(encoder, "model", None)
    tokenizer: Any = getattr(encoder, "tokenizer", None)
    config = _describe(model, tokenizer) if model is not None else None
    if config is None:
        return False
    spec: ModelSpec = encoder.spec
    meta = {"format": FORMAT, "model": spec.name, "pretrained": spec.pretrained,
            "checkpoint": _checkpoint_stamp(spec), "dim": int(encoder.dim), "digest": _weights_digest(model), **config}
    target = library_root / EXPORT_DIR
    if _read_meta(target) == meta:
        return True
    arrays = _arrays(model)
    then = "run `jrsearch index` again to write it (text queries take the slower torch path until then)"
    try:
        _write(arrays, tokenizer.tokenizer.backend_tokenizer.to_str(), meta, target)
    except OSError as exc:  # as the CLIP export: the old export (or none) stays, the next run tries again
        need = sum(a.nbytes for a in arrays.values()) + 2**20
        if out_of_space(exc, library_root, need):
            raise disk_full_error(library_root, "writing the text-tower export", need, then) from None
        raise LibraryError(f"cannot write the text-tower export to {target}: {exc.strerror or exc}; {then}") from None
    return True


def _write(arrays: dict[str, np.ndarray], tokenizer_json: str, meta: dict, target: Path) -> None:
    """Write into a temp folder beside `target`, then swap it in: a reader sees a whole export or none."""
    def fill(tmp: Path) -> None:
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array)
        (tmp / TOKENIZER_FILE).write_text(tokenizer_json, encoding="utf-8")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))

    write_folder_checked(target, fill)


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x * np.float32(1 / np.sqrt(2))))


class HfTextTower:
    """open_clip's `encode_text(normalize=True)` for one exported HF text tower, in numpy."""

    def __init__(self, meta: dict, arrays: dict[str, np.ndarray], tokenizer: HfTokenizer) -> None:
        self.meta = meta
        self.a = arrays
        self.tokenizer = tokenizer
        self.dim = int(meta["dim"])

    @classmethod
    def load(cls, library_root: Path, spec: ModelSpec, dim: int) -> HfTextTower | None:
        """The export for `spec`, or None where it is missing, partial, made for other weights, or
        the `tokenizers` package is not installed."""
        folder = library_root / EXPORT_DIR
        meta = _read_meta(folder)
        if (meta is None or check_folder(folder).damaged or meta.get("format") != FORMAT
                or meta.get("model") != spec.name
                or meta.get("pretrained") != spec.pretrained or meta.get("dim") != dim
                or meta.get("checkpoint") != _checkpoint_stamp(spec)):
            return None
        names = [*LAYER_ARRAYS, "word_embedding", "position_embedding", "token_type_embedding", "emb_ln_w", "emb_ln_b"]
        names += [f"text_proj_{i}" for i in range({"identity": 0, "linear": 1, "mlp": 2}[meta["projection"]])]
        try:
            arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in names}
            tokenizer = HfTokenizer(folder / TOKENIZER_FILE, int(meta["context_length"]))
        except Exception:  # OSError, ImportError (no tokenizers), and tokenizers' bare Exception on a bad file
            return None
        return cls(meta, arrays, tokenizer)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Strings -> (n, dim) float32 unit vectors."""
        return np.stack([self.encode_tokens(ids) for ids in self.tokenizer(texts)])

    def encode_tokens(self, ids: list[int]) -> np.ndarray:
        """One text's token ids (no padding) -> a (dim,) unit vector."""
        a, meta = self.a, self.meta
        heads, width, eps = int(meta["heads"]), int(meta["width"]), float(meta["eps"])
        n = len(ids)
        positions = np.arange(n) + int(meta["pad_id"]) + 1  # RoBERTa numbers real tokens from padding_idx + 1
        x = a["word_embedding"][np.asarray(ids)] + a["position_embedding"][positions] + a["token_type_embedding"]
        x = _layer_norm(x, a["emb_ln_w"], a["emb_ln_b"], eps)
        scale = np.float32(1.0 / np.sqrt(width // heads))
        for layer in range(int(meta["layers"])):
            w = {name: a[name][layer] for name in LAYER_ARRAYS}
            q, k, v = ((x @ w[f"{p}_w"] + w[f"{p}_b"]).reshape(n, heads, -1).transpose(1, 0, 2) for p in "qkv")
            scores = (q * scale) @ k.transpose(0, 2, 1)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            attended = (scores / scores.sum(-1, keepdims=True)) @ v  # (heads, n, head_width)
            x = _layer_norm(x + attended.transpose(1, 0, 2).reshape(n, width) @ w["out_w"] + w["out_b"],
                            w["ln_1_w"], w["ln_1_b"], eps)
            h = _gelu(x @ w["fc_w"] + w["fc_b"])
            x = _layer_norm(x + h @ w["proj_w"] + w["proj_b"], w["ln_2_w"], w["ln_2_b"], eps)
        out = x.mean(0) if meta["pooler"] == "mean" else x[0]
        if meta["projection"] == "linear":
            out = out @ a["text_proj_0"]
        elif meta["projection"] == "mlp":
            out = _gelu(out @ a["text_proj_0"]) @ a["text_proj_1"]
        out = np.asarray(out, dtype=np.float32)
        return out / max(float(np.linalg.norm(out)), 1e-12)


def export_query_tower(encoder: Encoder, root: Path) -> bool:
    """Write ROOT/query_model for `encoder`'s text tower, a standard CLIP one or an HF (XLM-R) one;
    False where neither export covers the model (its text queries then load the model)."""
    return export_text_tower(encoder, root) or export_hf_text_tower(encoder, root)


def load_query_tower(library_root: Path, spec: ModelSpec, dim: int) -> TextTower | HfTextTower | None:
    """Whichever text-tower export there is for `spec` (CLIP or HF): the one shared in the model
    cache (`model_cache.py`), else the one an older jrsearch wrote into the library; or None."""
    from jrsearch.retrieval import model_cache

    shared = model_cache.find(spec)
    for folder in ([shared] if shared is not None else []) + [library_root]:
        tower = TextTower.load(folder, spec, dim) or HfTextTower.load(folder, spec, dim)
        if tower is not None:
            return tower
    return None
