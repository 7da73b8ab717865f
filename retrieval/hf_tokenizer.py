"""open_clip's `HFTokenizer` without torch or transformers, for the fast query path.

The same steps: open_clip's "whitespace" clean (ftfy, HTML unescape twice, whitespace collapse; no
lowercasing), then the model's own `tokenizer.json` through the Hugging Face `tokenizers` package
with truncation at the context length. Padding is left off: the text tower computes only the real
tokens (padding is masked out of attention and of the pooled mean in open_clip too).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from jrsearch.retrieval.tokenizer import _is_plain


def clean_whitespace(text: str) -> str:
    """open_clip's `_clean_whitespace`: ftfy, HTML unescape twice, collapse whitespace."""
    if not _is_plain(text):
        import ftfy

        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return " ".join(text.split()).strip()


class HfTokenizer:
    """Texts -> lists of token ids (special tokens included, truncated to the context length)."""

    def __init__(self, tokenizer_json: Path, context_length: int) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(tokenizer_json))
        self._tokenizer.enable_truncation(max_length=context_length)
        self._tokenizer.no_padding()
        self.context_length = context_length

    def __call__(self, texts: Sequence[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self._tokenizer.encode_batch([clean_whitespace(t) for t in texts])]
