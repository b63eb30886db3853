"""A tiny BERT folder and separable multi-label texts for training tests (no download).

Importable from every test folder: pytest puts tests/ (the root conftest's folder) on sys.path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WORDS = {
    0: ["wheelchair", "lift", "ramp", "seat"],
    1: ["hearing", "cochlear", "sound", "ear"],
    2: ["braille", "tactile", "pin", "reader"],
}
FILLER = ["device", "with", "a", "the", "system", "method", "for", "and"]
LABELS = ["A61G", "H04R", "G09B"]


def make_texts(n: int, seed: int) -> tuple[list[str], list[list[str]]]:
    """Texts whose label codes are exactly the word groups they contain (one or two each)."""
    rng = np.random.default_rng(seed)
    texts, label_sets = [], []
    for _ in range(n):
        picked = rng.choice(3, size=1 + int(rng.random() < 0.3), replace=False)
        words = [w for j in picked for w in rng.choice(WORDS[j], size=2)]
        words += list(rng.choice(FILLER, size=4))
        rng.shuffle(words)
        texts.append(" ".join(words))
        label_sets.append([LABELS[j] for j in sorted(picked)])
    return texts, label_sets


def build_tiny_bert(folder: Path, extra_words: tuple[str, ...] = ()) -> str:
    """Save a two-layer BERT (hidden 32, no dropout) and its word-level tokenizer in `folder`;
    the vocabulary is WORDS, FILLER and `extra_words`."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = sorted({w for ws in WORDS.values() for w in ws} | set(FILLER) | set(extra_words))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    # transformers 5 ignores `vocab_file`; the vocabulary goes in as a dict.
    BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(folder)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(folder)
    return str(folder)
