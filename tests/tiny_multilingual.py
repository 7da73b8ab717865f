"""The tiny multilingual test model's Hugging Face files: a byte-level BPE tokenizer and an XLM-R config.

`python tests/tiny_multilingual.py` rewrites the shipped files in
retrieval/encoders/model_configs/tiny-multilingual/ from the sentences below (written for this
project, so the vocabulary carries no dataset's licence). Tests also call `write_hf_tower` with
another corpus (the XTD10 captions, trained into a temp dir and never committed).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # XLM-R's ids 0..4
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "retrieval" / "encoders" / "model_configs" / "tiny-multilingual"

# Short sentences in the eleven XTD10 languages and a few more scripts, written for this project.
OWN_CORPUS = [
    "a small brown dog runs along the beach", "two children play football in the park at noon",
    "ein kleiner Hund läuft am Strand entlang", "zwei Kinder spielen mittags Fußball im Park",
    "un petit chien court le long de la plage", "deux enfants jouent au football dans le parc",
    "un perro pequeño corre por la playa", "dos niños juegan al fútbol en el parque",
    "un piccolo cane corre lungo la spiaggia", "due bambini giocano a calcio nel parco",
    "mały brązowy pies biegnie wzdłuż plaży", "dwoje dzieci gra w piłkę nożną w parku",
    "маленькая собака бежит по пляжу", "двое детей играют в футбол в парке",
    "küçük kahverengi bir köpek sahilde koşuyor", "iki çocuk parkta futbol oynuyor",
    "작은 갈색 개가 해변을 따라 달린다", "두 아이가 공원에서 축구를 한다",
    "一只棕色的小狗在海滩上奔跑", "两个孩子在公园里踢足球",
    "小さな茶色の犬が浜辺を走っている", "二人の子供が公園でサッカーをしている",
    "ένας μικρός σκύλος τρέχει στην παραλία", "كلب صغير يركض على الشاطئ", "כלב קטן רץ לאורך החוף",
    "एक छोटा कुत्ता समुद्र तट पर दौड़ता है", "สุนัขตัวเล็กวิ่งไปตามชายหาด",
]

MODEL_CONFIG = {  # a 2-layer XLM-R: the architecture of xlm-roberta-base, at toy size
    "architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta", "hidden_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128, "hidden_act": "gelu",
    "max_position_embeddings": 130, "type_vocab_size": 1, "layer_norm_eps": 1e-5,
    "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "initializer_range": 0.02,
    "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "position_embedding_type": "absolute",
}


def train_tokenizer(texts: Iterable[str], vocab_size: int, kind: str = "bpe"):
    """A `tokenizers.Tokenizer` with XLM-R's special tokens and `<s> ... </s>` framing.

    kind "bpe": byte-level BPE (any text encodes, nothing is <unk>); "unigram": a SentencePiece-style
    unigram model with NFKC and the metaspace, as xlm-roberta-base's own tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    if kind == "bpe":
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    else:
        tokenizer = Tokenizer(models.Unigram())
        tokenizer.normalizer = normalizers.NFKC()
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, unk_token="<unk>",
                                          show_progress=False)
    tokenizer.train_from_iterator(list(texts), trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    return tokenizer


def write_hf_tower(folder: Path, texts: Iterable[str], vocab_size: int = 600, kind: str = "bpe") -> Path:
    """config.json, tokenizer.json and tokenizer_config.json: what transformers' Auto* classes read."""
    tokenizer = train_tokenizer(texts, vocab_size, kind)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    config = {**MODEL_CONFIG, "vocab_size": tokenizer.get_vocab_size()}
    (folder / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 128,
                        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
                        "cls_token": "<s>", "pad_token": "<pad>", "mask_token": "<mask>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=1) + "\n")
    return folder


if __name__ == "__main__":
    print(write_hf_tower(SHIPPED_DIR, OWN_CORPUS))
