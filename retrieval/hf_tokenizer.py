"""open_clip's `HFTokenizer` without torch or transformers, for the fast query path.

The same steps: open_clip's clean ("whitespace": ftfy, HTML unescape twice, whitespace collapse;
"lower": that, lowercased; "canonicalize", SigLIP's: that, lowercased, without punctuation), then
the model's own `tokenizer.json` through the Hugging Face `tokenizers` package with truncation at
the context length. Padding is left off where the text tower masks it out (XLM-R: only the real
tokens are computed); a tower that reads every position (SigLIP) is given `pad_id` and gets rows
padded to the context length, as open_clip pads them.
"""

from __future__ import annotations

import html
import string
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


_PUNCTUATION = str.maketrans("", "", string.punctuation)


def clean_lower(text: str) -> str:
    """open_clip's `_clean_lower`."""
    return clean_whitespace(text).lower()


def clean_canonicalize(text: str) -> str:
    """open_clip's `_clean_canonicalize` (big_vision's `canonicalize_text`): no punctuation, lowercase."""
    text = clean_whitespace(text).replace("_", " ").translate(_PUNCTUATION).lower()
    return " ".join(text.split())


CLEANS = {"whitespace": clean_whitespace, "lower": clean_lower, "canonicalize": clean_canonicalize}


class HfTokenizer:
    """Texts -> lists of token ids (special tokens included, truncated to the context length)."""

    def __init__(self, tokenizer_json: Path, context_length: int, clean: str = "whitespace",
                 pad_id: int | None = None) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(tokenizer_json))
        self._tokenizer.enable_truncation(max_length=context_length)
        if pad_id is None:
            self._tokenizer.no_padding()
        else:
            self._tokenizer.enable_padding(length=context_length, pad_id=pad_id)
        self._clean = CLEANS[clean]
        self.context_length = context_length

    def __call__(self, texts: Sequence[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self._tokenizer.encode_batch([self._clean(t) for t in texts])]
