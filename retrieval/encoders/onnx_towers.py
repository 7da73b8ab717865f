"""Pre-exported ONNX towers in the layout immich publishes on the Hugging Face hub: a joint model
that needs neither torch nor open_clip, only ONNX Runtime (or OpenVINO) and `tokenizers`.

    FOLDER/config.json                   open_clip's model config (embed_dim, vision_cfg, text_cfg)
    FOLDER/visual/model.onnx             "image" (n, 3, h, w) float32 -> "embedding"
    FOLDER/visual/preprocess_cfg.json    size, mean, std, interpolation, resize_mode (open_clip's)
    FOLDER/textual/model.onnx            "text" (n, context) int32 -> "embedding"
    FOLDER/textual/tokenizer.json        the Hugging Face tokenizer; tokenizer_config.json: pad_token

immich exports each tower with a batch of one; the runners feed a fixed-batch tower one input at
a time and cast the tokens to the dtype its graph declares. A model is named by a folder
(`--model DIR` or `--checkpoint DIR`: `ModelSpec(folder name, folder)`) or by a hub repo id
(`--model immich-app/ViT-B-32__openai`: `ModelSpec(repo, "")`), which huggingface_hub fetches
into its cache (offline: only what is cached there).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jrsearch.retrieval.encoders.joint import JointTowers
from jrsearch.retrieval.encoders.preprocess import ImagePreprocess, stack
from jrsearch.retrieval.errors import ModelUnavailableError
from jrsearch.retrieval.types import ModelSpec

if TYPE_CHECKING:
    from jrsearch.retrieval.encoders.onnx import TowerRunner

CONFIG = "config.json"
VISUAL, TEXTUAL = "visual", "textual"
MODEL_FILE = "model.onnx"
PREPROCESS = "preprocess_cfg.json"
TOKENIZER, TOKENIZER_CONFIG = "tokenizer.json", "tokenizer_config.json"
REQUIRED = (CONFIG, f"{VISUAL}/{MODEL_FILE}", f"{VISUAL}/{PREPROCESS}", f"{TEXTUAL}/{MODEL_FILE}",
            f"{TEXTUAL}/{TOKENIZER}")
HUB_FILES = [CONFIG, f"{VISUAL}/*", f"{TEXTUAL}/*"]  # immich's repos also hold rknpu/armnn copies
HUB_SKIP = ["*/rknpu/*", "*/armnn/*", "*.armnn", "*/fp16/*"]
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
DEFAULT_BATCH = 32
PRECISIONS = {"auto": "fp32", "fp32": "fp32", "bf16": "bf16"}


def is_towers_folder(path: Path) -> bool:
    return all((path / name).is_file() for name in REQUIRED)


def is_repo_id(name: str) -> bool:
    """A hub repo id (owner/name) rather than an open_clip model name (those hold no '/', or
    start with 'hf-hub:') or a local path."""
    return bool(REPO_ID.match(name)) and not Path(name).exists()


def is_towers_spec(spec: ModelSpec) -> bool:
    """Whether `spec` names pre-exported towers (a folder, or a hub repo id) instead of open_clip weights."""
    if spec.pretrained:
        return Path(spec.pretrained).is_dir()
    return is_repo_id(spec.name)


def folder_spec(folder: Path, name: str | None = None) -> ModelSpec:
    """The spec of the towers in `folder`; `ModelUnavailableError` naming the missing file where
    the folder does not hold them."""
    missing = [n for n in REQUIRED if not (folder / n).is_file()]
    if missing:
        raise ModelUnavailableError(f"{folder} is not a folder of ONNX towers: it has no {missing[0]}; "
                                    f"pass a folder laid out as immich's (config.json, visual/, textual/)")
    return ModelSpec(name or folder.resolve().name, str(folder.resolve()))


def towers_folder(spec: ModelSpec) -> Path:
    """The local folder of `spec`'s towers: its own, or the hub repo's snapshot in the HF cache."""
    if spec.pretrained:
        return Path(spec.pretrained)
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(spec.name, allow_patterns=HUB_FILES, ignore_patterns=HUB_SKIP))
    except LocalEntryNotFoundError:
        why = "it is not in the Hugging Face cache and the hub cannot be reached from here"
        raise ModelUnavailableError(f"model {spec.name}: {why}; download it once where the hub is reachable "
                                    f"(huggingface-cli download {spec.name}) or pass --model DIR with a "
                                    f"folder that holds its ONNX towers") from None
    except Exception as exc:
        why = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ModelUnavailableError(
            f"model {spec.name}: could not fetch its ONNX towers from the Hugging Face hub ({why}); "
            f"download them once where the hub is reachable (huggingface-cli download {spec.name}) "
            f"or pass --model DIR with a folder that holds them") from None
    folder_spec(folder, spec.name)
    return folder


class TowersTokenizer:
    """Texts -> (n, context_length) int64 token ids from the folder's `tokenizer.json`, padded with
    its pad token (for CLIP's text tower, pooled at the first end token, the padding is inert)."""

    def __init__(self, textual: Path, context_length: int) -> None:
        from tokenizers import Tokenizer

        from jrsearch.retrieval.hf_tokenizer import HfTokenizer

        self._encode = HfTokenizer(textual / TOKENIZER, context_length)
        config = _read_json(textual / TOKENIZER_CONFIG) if (textual / TOKENIZER_CONFIG).is_file() else {}
        pad = config.get("pad_token", "<|endoftext|>")
        pad = pad.get("content", "") if isinstance(pad, dict) else str(pad)
        self.pad_id = Tokenizer.from_file(str(textual / TOKENIZER)).token_to_id(pad) or 0
        self.context_length = context_length

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        out = np.full((len(texts), self.context_length), self.pad_id, dtype=np.int64)
        for row, ids in enumerate(self._encode(texts)):
            out[row, :len(ids)] = ids
        return out


class OnnxTowersEncoder(JointTowers):
    """A folder of pre-exported towers on ONNX Runtime (fp32) or OpenVINO (fp32, bf16)."""

    device = "cpu"

    def __init__(self, spec: ModelSpec, folder: Path, precision: str = "fp32", runtime: str = "onnx") -> None:
        config = _read_json(folder / CONFIG)
        self.spec = spec
        self.folder = folder
        self.precision = precision
        self.backend = runtime
        self.batch_size = DEFAULT_BATCH
        self._dim = int(config["embed_dim"])
        self.preprocess = ImagePreprocess.from_cfg(_read_json(folder / VISUAL / PREPROCESS))
        self.image_size = self.preprocess.side
        self.tokenizer = TowersTokenizer(folder / TEXTUAL, int(config.get("text_cfg", {}).get("context_length", 77)))
        self.notes: list[str] = []
        self._runners: dict[str, TowerRunner] = {}
        self._opening = threading.Lock()

    @property
    def dim(self) -> int:
        return self._dim

    def _run(self, tower: str, inputs: np.ndarray) -> np.ndarray:
        from jrsearch.retrieval.encoders.onnx import _normalise, runner

        if not len(inputs):
            return np.zeros((0, self.dim), np.float32)
        with self._opening:
            if tower not in self._runners:
                self._runners[tower] = runner(self.folder / tower / MODEL_FILE, self.backend, self.precision)
        return _normalise(self._runners[tower].run(inputs, self.batch_size))

    def encode_images(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        return self._run(VISUAL, stack(images))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self._run(TEXTUAL, self.tokenizer(list(texts)))


def load_towers(spec: ModelSpec, device: str | None = None, precision: str = "auto",
                backend: str = "auto") -> OnnxTowersEncoder:
    """The towers `spec` names, on the CPU: ONNX Runtime in fp32 (backend auto or onnx), OpenVINO
    with `--backend openvino` (fp32, bf16)."""
    if device and not device.startswith("cpu"):
        raise ModelUnavailableError(f"{spec.label()} is a folder of ONNX towers, which run on the CPU; "
                                    f"drop --device {device}")
    if precision not in PRECISIONS:
        raise ModelUnavailableError(f"{spec.label()} runs its ONNX towers in fp32 or bf16 (--backend openvino), "
                                    f"not {precision}")
    runtime = "openvino" if backend == "openvino" or PRECISIONS[precision] == "bf16" else "onnx"
    if backend == "torch":
        raise ModelUnavailableError(f"{spec.label()} is a folder of ONNX towers; torch cannot run it: "
                                    f"use --backend auto, onnx or openvino")
    if runtime == "openvino":
        from jrsearch.retrieval.encoders.openvino_runtime import RuntimeUnavailable, require

        try:
            require(PRECISIONS[precision])
        except RuntimeUnavailable as exc:
            raise ModelUnavailableError(f"--backend openvino cannot run {spec.label()}: {exc}") from None
    return OnnxTowersEncoder(spec, towers_folder(spec), PRECISIONS[precision], runtime)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(f"{path} could not be read ({exc}); fetch the model's files again") from None
    if not isinstance(data, dict):
        raise ModelUnavailableError(f"{path} is not a JSON object; fetch the model's files again")
    return data
