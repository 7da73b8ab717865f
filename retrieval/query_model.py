"""The text tower as plain arrays, so that a text query runs without torch or open_clip.

Whenever torch loads a model, `export_text_tower` writes what a query needs once, into the
model's folder in the user cache (shared by every library built with that model and weights;
libraries written by older versions carry their own copy in LIBRARY/query_model, still read):

    MODEL_CACHE/query_model/meta.json   model spec, layer config, activation, a weight digest
    MODEL_CACHE/query_model/*.npy       float32 weights (per-layer ones stacked over layers),
                                        merges.npy for the tokenizer

`TextTower.load` maps them (np.load, mmap) and `encode` runs open_clip's
`encode_text(normalize=True)` in numpy: token + positional embedding, residual blocks with a
causal mask, ln_final, the end-of-text position, text projection, L2 norm. The causal mask
means positions after the end token never change it, so only the real tokens are computed.

Exported: open_clip's standard text transformer, in a `CLIP` (ViT-B-32, ViT-L-14, convnext_base,
tiny-test ...) or as the `text` tower of a `CustomTextCLIP` or `CoCa` (MobileCLIP2, EVA02,
coca_ViT-B-32): causal or bidirectional (every position, padding included, as open_clip runs it),
pooled on the end token, the first or the last position, or CoCa's appended class token. Any other
tower has no export and its queries take the torch path. A stale export (another model or weights)
is detected and ignored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jrsearch.retrieval.checksums import check_folder, write_folder_checked
from jrsearch.retrieval.diskspace import disk_full_error, out_of_space
from jrsearch.retrieval.errors import LibraryError
from jrsearch.retrieval.hf_tokenizer import CLEANS, HfTokenizer
from jrsearch.retrieval.tokenizer import ClipTokenizer
from jrsearch.retrieval.types import ModelSpec

if TYPE_CHECKING:
    import torch

    from jrsearch.retrieval.encoders.protocol import Encoder

EXPORT_DIR = "query_model"
FORMAT = 1
LAYER_ARRAYS = ("ln_1_w", "ln_1_b", "qkv_w", "qkv_b", "out_w", "out_b", "ln_2_w", "ln_2_b", "fc_w", "fc_b",
                "proj_w", "proj_b")
ACTIVATIONS = ("gelu", "quick_gelu")
POOLS = ("argmax", "last", "first")
TOKENIZER_FILE = "tokenizer.json"


def _checkpoint_stamp(spec: ModelSpec) -> list[int] | None:
    """Size and mtime of a local checkpoint file (weights behind the same path can change)."""
    path = Path(spec.pretrained).expanduser() if spec.pretrained else None
    if path is None or not path.is_file():
        return None
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def text_transformer(model: Any) -> Any:
    """The object holding the text transformer's parts: a `CLIP` itself, else its `text` tower
    (`CustomTextCLIP`, `CoCa`: open_clip's `TextTransformer`, same attribute names)."""
    return model if hasattr(model, "token_embedding") else getattr(model, "text", None)


def _weights_digest(model: Any) -> str:
    """A cheap fingerprint of the text tower's weights (a few small tensors)."""
    text = text_transformer(model)
    digest = hashlib.sha256()
    for tensor in (text.positional_embedding, text.ln_final.weight, text.transformer.resblocks[-1].mlp.c_proj.bias,
                   getattr(text.text_projection, "weight", text.text_projection)):
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


# Texts on which open_clip's cleaning options differ (lowercasing, whitespace, entities, punctuation):
# a tokenizer that cleans all of them as `retrieval.tokenizer.clean` does is the default `lower` one.
_CLEAN_PROBES = ("  A Dog&amp;amp;\tON the  Beach!  ", "Caf\u00e9 \u201cQUOTED\u201d", "mixed-Case, punct. 42")


def _cleans_like_ours(clean_fn: Callable[[str], str]) -> bool:
    from jrsearch.retrieval.tokenizer import clean

    return all(clean_fn(text) == clean(text) for text in _CLEAN_PROBES)


def _attention(text: Any) -> dict | None:
    """How the tower's tokens attend and which one it pools, or None for a layout not covered.

    causal: CLIP's mask (else every position attends every other, padding included); pool: the
    position kept ("argmax": the end token, "last", "first"); cls: CoCa's class token appended
    after the padded text and pooled, "legacy" or "correct" for open_clip's two masks of it."""
    import open_clip

    if isinstance(text, open_clip.CLIP):
        return {"causal": text.attn_mask is not None, "pool": text.text_pool_type, "cls": None}
    if not isinstance(text, open_clip.transformer.TextTransformer) or text.use_pad_mask:
        return None
    if text.cls_emb is not None:
        if text.attn_mask is None or text.pad_id != 0:
            return None
        return {"causal": True, "pool": "last", "cls": "correct" if text.correct_cls_mask else "legacy"}
    return {"causal": text.attn_mask is not None, "pool": text.pool_type, "cls": None}


def tokenizer_config(tokenizer: Any) -> dict | None:
    """How `query_tokenizer` rebuilds open_clip's `tokenizer` without torch: {"tokenizer": "clip"}
    for CLIP's BPE; for a Hugging Face one (SigLIP's) its clean, padding id and context length,
    its `tokenizer.json` saved beside; None for any other."""
    from open_clip.tokenizer import HFTokenizer, SimpleTokenizer

    if isinstance(tokenizer, SimpleTokenizer):
        if (_cleans_like_ours(tokenizer.clean_fn) and tokenizer.reduction_fn is None
                and len(tokenizer.all_special_ids) == 2):
            return {"tokenizer": "clip"}
        return None
    clean = getattr(getattr(tokenizer, "clean_fn", None), "__name__", "").removeprefix("_clean_")
    hf: Any = getattr(tokenizer, "tokenizer", None)
    if (not isinstance(tokenizer, HFTokenizer) or tokenizer.tokenizer_mode or tokenizer.strip_sep_token
            or clean not in CLEANS or getattr(hf, "backend_tokenizer", None) is None or hf.pad_token_id is None
            or getattr(hf, "padding_side", "right") != "right"):
        return None
    return {"tokenizer": "hf", "clean": clean, "pad_id": int(hf.pad_token_id)}


def query_tokenizer(folder: Path, meta: dict) -> Callable[[list[str]], np.ndarray]:
    """Texts -> (n, context_length) int64 ids, as the export's tokenizer (`tokenizer_config`) makes them."""
    context = int(meta["context_length"])
    if meta.get("tokenizer", "clip") == "clip":
        return ClipTokenizer.load(folder / "merges.npy", context)
    hf = HfTokenizer(folder / TOKENIZER_FILE, context, meta["clean"], int(meta["pad_id"]))
    return lambda texts: np.asarray(hf(texts), dtype=np.int64).reshape(len(texts), context)


def save_tokenizer(tokenizer: Any, config: dict, context: int, folder: Path) -> None:
    """Write what `query_tokenizer` reads for `tokenizer` (described by `config`) into `folder`."""
    if config["tokenizer"] == "clip":
        from open_clip.tokenizer import default_bpe

        ClipTokenizer.from_bpe_file(Path(default_bpe()), context).save(folder / "merges.npy")
    else:
        (folder / TOKENIZER_FILE).write_text(tokenizer.tokenizer.backend_tokenizer.to_str(), encoding="utf-8")


def _describe(model: Any, tokenizer: Any) -> dict | None:
    """The layer config of a standard open_clip text transformer, or None for anything else."""
    import open_clip
    import torch

    text = text_transformer(model)
    attention = _attention(text) if text is not None else None
    if (attention is None or attention["pool"] not in POOLS or text.text_projection is None
            or not isinstance(text.ln_final, torch.nn.LayerNorm)):
        return None
    tokens = tokenizer_config(tokenizer)
    if tokens is None:
        return None
    blocks = list(text.transformer.resblocks)
    for block in blocks:
        if not (type(block) is open_clip.transformer.ResidualAttentionBlock and not hasattr(block, "ln_1_kv")
                and isinstance(block.ln_1, torch.nn.LayerNorm) and isinstance(block.ln_2, torch.nn.LayerNorm)
                and isinstance(block.ls_1, torch.nn.Identity) and isinstance(block.ls_2, torch.nn.Identity)
                and type(block.mlp.c_fc) is torch.nn.Linear and type(block.mlp.c_proj) is torch.nn.Linear
                and block.attn.in_proj_weight is not None):
            return None
    gelu = blocks[0].mlp.gelu
    if isinstance(gelu, open_clip.transformer.QuickGELU):
        activation = "quick_gelu"
    elif type(gelu) is torch.nn.GELU and gelu.approximate == "none":
        activation = "gelu"
    else:
        return None
    projection = text.text_projection
    return {"width": int(text.positional_embedding.shape[1]), "heads": int(blocks[0].attn.num_heads),
            "layers": len(blocks), "context_length": int(tokenizer.context_length), "activation": activation,
            "eps": float(blocks[0].ln_1.eps), "final_eps": float(text.ln_final.eps),
            "projection_bias": bool(getattr(projection, "bias", None) is not None), **attention, **tokens}


def _arrays(model: Any) -> dict[str, np.ndarray]:
    """The weights a query needs, float32, linear weights transposed so that `x @ w` applies them."""
    def f32(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().float().cpu().numpy()

    text = text_transformer(model)
    blocks = list(text.transformer.resblocks)
    per_layer = {
        "ln_1_w": lambda b: f32(b.ln_1.weight), "ln_1_b": lambda b: f32(b.ln_1.bias),
        "qkv_w": lambda b: f32(b.attn.in_proj_weight).T, "qkv_b": lambda b: f32(b.attn.in_proj_bias),
        "out_w": lambda b: f32(b.attn.out_proj.weight).T, "out_b": lambda b: f32(b.attn.out_proj.bias),
        "ln_2_w": lambda b: f32(b.ln_2.weight), "ln_2_b": lambda b: f32(b.ln_2.bias),
        "fc_w": lambda b: f32(b.mlp.c_fc.weight).T, "fc_b": lambda b: f32(b.mlp.c_fc.bias),
        "proj_w": lambda b: f32(b.mlp.c_proj.weight).T, "proj_b": lambda b: f32(b.mlp.c_proj.bias),
    }
    arrays = {name: np.stack([get(b) for b in blocks]) for name, get in per_layer.items()}
    projection = text.text_projection
    arrays.update(token_embedding=f32(text.token_embedding.weight),
                  positional_embedding=f32(text.positional_embedding),
                  ln_final_w=f32(text.ln_final.weight), ln_final_b=f32(text.ln_final.bias),
                  text_projection=f32(projection.weight).T if hasattr(projection, "weight") else f32(projection))
    if getattr(projection, "bias", None) is not None:
        arrays["text_projection_b"] = f32(projection.bias)
    if getattr(text, "cls_emb", None) is not None:
        arrays["cls_emb"] = f32(text.cls_emb)
    return {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in arrays.items()}


def _read_meta(folder: Path) -> dict | None:
    try:
        return json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None


def export_text_tower(encoder: Encoder, library_root: Path) -> bool:
    """Write ROOT/query_model for a standard CLIP text tower unless an up-to-date one is there; False
    for any other model (`hf_text_tower.export_query_tower` tries the HF towers next).

    ROOT is the model's cache folder (`encoders/backend.share_text_tower`). Cheap when the export
    is current: it compares a digest of a few small tensors. A write that fails (a full disk, no
    permission) raises `LibraryError` and leaves the old export, or none, so a later load tries again.
    """
    model, tokenizer = getattr(encoder, "model", None), getattr(encoder, "tokenizer", None)
    config = _describe(model, tokenizer) if model is not None else None
    if model is None or config is None:
        return False
    spec: ModelSpec = encoder.spec
    projection = text_transformer(model).text_projection
    dim = int(projection.shape[1] if not hasattr(projection, "weight") else projection.weight.shape[0])
    meta = {"format": FORMAT, "model": spec.name, "pretrained": spec.pretrained, "checkpoint": _checkpoint_stamp(spec),
            "dim": dim, "digest": _weights_digest(model), **config}
    target = library_root / EXPORT_DIR
    if _read_meta(target) == meta and not check_folder(target, full=True).damaged:
        return True
    arrays = _arrays(model)
    then = "it is written the next time jrsearch loads this model (text queries take the slower path until then)"
    try:
        _write(arrays, meta, target, tokenizer)
    except OSError as exc:
        need = sum(a.nbytes for a in arrays.values()) + 2 * 2**20  # and the tokenizer's merges
        if out_of_space(exc, library_root, need):
            raise disk_full_error(library_root, "writing the text-tower export", need, then) from None
        raise LibraryError(f"cannot write the text-tower export to {target}: {exc.strerror or exc}; {then}") from None
    return True


def _write(arrays: dict[str, np.ndarray], meta: dict, target: Path, tokenizer: Any) -> None:
    """Write into a temp folder beside `target`, then swap it in: a reader sees a whole export or none."""
    def fill(tmp: Path) -> None:
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array)
        save_tokenizer(tokenizer, meta, meta["context_length"], tmp)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))

    write_folder_checked(target, fill)


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to 1.5e-7 (Abramowitz & Stegun 7.1.26); numpy has none and scipy costs an import."""
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-x * x))


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    centred = x - mean
    return centred / np.sqrt((centred * centred).mean(-1, keepdims=True) + eps) * weight + bias


class TextTower:
    """open_clip's `encode_text(normalize=True)` for one exported CLIP text tower, in numpy."""

    def __init__(self, meta: dict, arrays: dict[str, np.ndarray], tokenizer: Callable[[list[str]], np.ndarray]
                 ) -> None:
        self.meta = meta
        self.a = arrays
        self.tokenizer = tokenizer
        self.dim = int(meta["dim"])

    @classmethod
    def load(cls, library_root: Path, spec: ModelSpec, dim: int) -> TextTower | None:
        """The export for `spec`, or None where it is missing, partial or made for other weights."""
        folder = library_root / EXPORT_DIR
        meta = _read_meta(folder)
        if (meta is None or check_folder(folder).damaged or meta.get("format") != FORMAT
                or meta.get("model") != spec.name
                or meta.get("pretrained") != spec.pretrained or meta.get("dim") != dim
                or meta.get("activation") not in ACTIVATIONS or meta.get("checkpoint") != _checkpoint_stamp(spec)):
            return None
        names = [*LAYER_ARRAYS, "token_embedding", "positional_embedding", "ln_final_w", "ln_final_b",
                 "text_projection"]
        names += ["text_projection_b"] if meta["projection_bias"] else []
        names += ["cls_emb"] if meta.get("cls") else []
        try:
            arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in names}
            tokenizer = query_tokenizer(folder, meta)
        except Exception:  # OSError, ValueError, and tokenizers' bare Exception on a bad file
            return None
        return cls(meta, arrays, tokenizer)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """Strings -> (n, dim) float32 unit vectors."""
        return np.stack([self.encode_tokens(row) for row in self.tokenizer(texts)])

    def encode_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """One row of token ids (padded to the context length) -> a (dim,) unit vector."""
        a, meta = self.a, self.meta
        heads, width = int(meta["heads"]), int(meta["width"])
        x, mask = self._inputs(tokens)
        n = len(x)
        scale = np.float32(1.0 / np.sqrt(width // heads))
        for layer in range(int(meta["layers"])):
            w = {name: a[name][layer] for name in LAYER_ARRAYS}
            h = _layer_norm(x, w["ln_1_w"], w["ln_1_b"], meta["eps"])
            q, k, v = (h @ w["qkv_w"] + w["qkv_b"]).reshape(n, 3, heads, -1).transpose(1, 2, 0, 3)
            scores = (q * scale) @ k.transpose(0, 2, 1) + mask
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            attended = (scores / scores.sum(-1, keepdims=True)) @ v  # (heads, n, head_width)
            x = x + attended.transpose(1, 0, 2).reshape(n, width) @ w["out_w"] + w["out_b"]
            h = _layer_norm(x, w["ln_2_w"], w["ln_2_b"], meta["eps"]) @ w["fc_w"] + w["fc_b"]
            if meta["activation"] == "quick_gelu":
                h = h / (1.0 + np.exp(-1.702 * h))
            else:
                h = 0.5 * h * (1.0 + _erf(h * np.float32(1 / np.sqrt(2))))
            x = x + h @ w["proj_w"] + w["proj_b"]
        pooled = _layer_norm(x[self._pooled(tokens)], a["ln_final_w"], a["ln_final_b"], meta["final_eps"])
        out = pooled @ a["text_projection"]
        if "text_projection_b" in a:
            out = out + a["text_projection_b"]
        out = np.asarray(out, dtype=np.float32)
        return out / max(float(np.linalg.norm(out)), 1e-12)

    def _pooled(self, tokens: np.ndarray) -> int:
        """Where the pooled token is among the positions `_inputs` computes."""
        pool = self.meta.get("pool", "argmax")
        if self.meta.get("cls"):
            return -1
        if pool == "argmax":
            return int(np.argmax(tokens))
        return 0 if pool == "first" else len(tokens) - 1

    def _inputs(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The embedded positions the pooled token depends on, and their additive attention mask.

        Causal: only the positions up to the pooled one (later ones never reach it). Bidirectional:
        all of them, padding included, as open_clip computes them. CoCa: the text up to its end
        token (with the first padding position in the legacy mask, which lets the class token see
        it), then the class token at the position after the padded text."""
        a, meta = self.a, self.meta
        cls = meta.get("cls")
        if not cls:
            n = self._pooled(tokens) + 1 if meta.get("causal", True) else len(tokens)
            x = a["token_embedding"][tokens[:n]] + a["positional_embedding"][:n]
            causal = meta.get("causal", True)
            return x, (np.triu(np.full((n, n), -np.inf, dtype=np.float32), 1) if causal
                       else np.zeros((n, n), np.float32))
        length = len(tokens)
        n = min(int(np.argmax(tokens)) + 1 + (cls == "legacy"), length)
        x = np.concatenate([a["token_embedding"][tokens[:n]] + a["positional_embedding"][:n],
                            (a["cls_emb"] + a["positional_embedding"][length])[None]])
        mask = np.triu(np.full((n + 1, n + 1), -np.inf, dtype=np.float32), 1)
        if cls == "legacy" and tokens[length - 1] == 0:
            mask[n, n] = -np.inf  # the legacy mask keys the class token on the last text position
        return x, mask

