"""Write an open_clip model as ONNX towers in immich's layout (`onnx_towers`), for machines without
torch: needs the `torch` extra, here only. Each tower is `encode_*(x, normalize=True)`, as immich
exports it, with input "image" or "text" (int32 tokens) and output "embedding" (here with a dynamic
batch; immich's have a batch of one, which the runners also read). The tokenizer is open_clip's BPE
vocabulary written as a Hugging Face `tokenizer.json`, the way transformers converts CLIP's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from jrsearch.retrieval.encoders.onnx_towers import (
    CONFIG,
    MODEL_FILE,
    PREPROCESS,
    TEXTUAL,
    TOKENIZER,
    TOKENIZER_CONFIG,
    VISUAL,
)
from jrsearch.retrieval.fileio import write_folder_atomic
from jrsearch.retrieval.types import ModelSpec

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from jrsearch.retrieval.encoders.openclip import OpenClipEncoder

BOS, EOS = "<|startoftext|>", "<|endoftext|>"  # the names Hugging Face's CLIP tokenizer gives them
OPSET = 17


def export_towers(spec: ModelSpec, folder: Path) -> Path:
    """Export `spec` (loaded with open_clip on the CPU, fp32) into `folder`, written whole or not at all."""
    from jrsearch.retrieval.encoders.openclip import OpenClipEncoder

    encoder = OpenClipEncoder.load(spec, device="cpu", precision="fp32")
    folder.parent.mkdir(parents=True, exist_ok=True)
    write_folder_atomic(folder, lambda tmp: _write(encoder, tmp))
    return folder


def _write(encoder: OpenClipEncoder, tmp: Path) -> None:
    import open_clip
    import torch

    from jrsearch.retrieval.encoders.onnx import _quiet

    model = encoder.model
    spec = encoder.spec
    context = int(model.context_length)
    tokenizer = open_clip.get_tokenizer(spec.name)
    for sub in (VISUAL, TEXTUAL):
        (tmp / sub).mkdir()
    config = open_clip.get_model_config(spec.name) or {}
    (tmp / CONFIG).write_text(json.dumps(config, indent=2))
    (tmp / VISUAL / PREPROCESS).write_text(json.dumps(dict(open_clip.get_model_preprocess_cfg(model)), indent=2))
    clip_tokenizer(tokenizer).save(str(tmp / TEXTUAL / TOKENIZER))
    (tmp / TEXTUAL / TOKENIZER_CONFIG).write_text(json.dumps(
        {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS, "model_max_length": context}))

    class Tower(torch.nn.Module):
        def __init__(self, image: bool) -> None:
            super().__init__()
            self.model = model
            self.image = image

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (self.model.encode_image(x, normalize=True) if self.image
                    else self.model.encode_text(x, normalize=True))

    side = encoder.image_size
    examples = {VISUAL: ("image", torch.randn(2, 3, side, side)),
                TEXTUAL: ("text", tokenizer(["a photo", "x"]).to(torch.int32))}
    with torch.enable_grad(), _quiet():  # gradients on: nn.MultiheadAttention's fused path does not export
        for sub, (name, example) in examples.items():
            torch.onnx.export(Tower(sub == VISUAL).eval(), (example,), str(tmp / sub / MODEL_FILE),
                              input_names=[name], output_names=["embedding"],
                              dynamic_axes={name: {0: "batch_size"}, "embedding": {0: "batch_size"}},
                              opset_version=OPSET, dynamo=False)


def clip_tokenizer(simple: object) -> Tokenizer:
    """open_clip's `SimpleTokenizer` as a `tokenizers.Tokenizer` (transformers' CLIP conversion,
    with the byte-level step splitting nothing more than CLIP's own pattern does)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    renamed = {"<start_of_text>": BOS, "<end_of_text>": EOS}
    vocab = {renamed.get(token, token): int(i) for token, i in simple.encoder.items()}  # type: ignore[attr-defined]
    merges = [pair for pair, _ in sorted(simple.bpe_ranks.items(), key=lambda item: item[1])]  # type: ignore[attr-defined]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, continuing_subword_prefix="",
                                     end_of_word_suffix="</w>", fuse_unk=False, unk_token=EOS))
    tokenizer.add_special_tokens([BOS, EOS])
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.RobertaProcessing((EOS, vocab[EOS]), (BOS, vocab[BOS]),
                                                            trim_offsets=False, add_prefix_space=False)
    return tokenizer
