"""Which writing systems a query is in, and the one-line hint when the library's model reads English only.

CLIP's own text towers (ViT-B-32, ViT-L-14, tiny-test ...) were trained on English captions with
an English byte-pair vocabulary: a query in Cyrillic, Han, Hangul or Arabic script still gets
an answer, but a poor one. Scripts come from the Unicode character names (`unicodedata`); a
Latin-script query (German, Polish, ...) cannot be told from English this way and gets no hint.
"""

from __future__ import annotations

import unicodedata

# Model names whose text tower reads many languages (open_clip's XLM-R and NLLB towers, SigLIP i18n).
MULTILINGUAL_MARKERS = ("xlm-roberta", "nllb", "i18n", "multilingual", "mt5")
RECOMMENDED = "--model xlm-roberta-base-ViT-B-32 --pretrained laion5b_s13b_b90k"
SCRIPTS = {  # the first word of a letter's Unicode name -> the script's name in the hint
    "CJK": "Han (CJK)", "HIRAGANA": "Japanese kana", "KATAKANA": "Japanese kana", "HANGUL": "Hangul",
    "CYRILLIC": "Cyrillic", "ARABIC": "Arabic", "GREEK": "Greek", "HEBREW": "Hebrew", "THAI": "Thai",
    "DEVANAGARI": "Devanagari", "BENGALI": "Bengali", "TAMIL": "Tamil", "TELUGU": "Telugu", "GEORGIAN": "Georgian",
    "ARMENIAN": "Armenian", "ETHIOPIC": "Ethiopic", "KHMER": "Khmer", "LAO": "Lao", "MYANMAR": "Myanmar",
    "GUJARATI": "Gujarati", "GURMUKHI": "Gurmukhi", "KANNADA": "Kannada", "MALAYALAM": "Malayalam",
    "SINHALA": "Sinhala", "TIBETAN": "Tibetan", "MONGOLIAN": "Mongolian", "BOPOMOFO": "Bopomofo",
}


def letter_script(char: str) -> str | None:
    """A letter's script ("Cyrillic", "Latin", ...); None for anything that is not a letter."""
    if not char.isalpha():
        return None
    words = unicodedata.name(char, "").split()
    if "LATIN" in words:  # also FULLWIDTH LATIN ...
        return "Latin"
    for word in words[:2]:  # HALFWIDTH KATAKANA ..., CJK COMPATIBILITY IDEOGRAPH ...
        if word in SCRIPTS:
            return SCRIPTS[word]
    return None


def non_latin_scripts(text: str) -> list[str]:
    """The non-Latin scripts of `text`'s letters, in order of first appearance."""
    found = (letter_script(c) for c in text if not c.isascii())
    return list(dict.fromkeys(s for s in found if s is not None and s != "Latin"))


def is_multilingual(model_name: str) -> bool:
    return any(marker in model_name.lower() for marker in MULTILINGUAL_MARKERS)


def english_only_hint(text: str, model_name: str) -> str | None:
    """One line for a query in another script on an English-only model's library; None otherwise."""
    if text.isascii() or is_multilingual(model_name):
        return None
    scripts = non_latin_scripts(text)
    if not scripts:
        return None
    return (f"{model_name} is an English-only model, so this {' + '.join(scripts)} query matches poorly; for search "
            f"in any language, build a library with {RECOMMENDED}")
