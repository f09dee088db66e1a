"""Tiny random text models for tests, built from configs and saved to local folders (no hub access).

They have the real architectures (SigLIP text tower, Llama) at toy sizes; their weights are random, so tests check
mechanics (formulas, gradients, save/load), never quality.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

SPECIALS = ["<pad>", "</s>", "<unk>", "<s>"]


def skimage_captions() -> list[tuple[np.ndarray, str]]:
    """Real photographs from scikit-image with the first line of their loader's docstring as caption."""
    from skimage import data

    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera", "horse"):
        loader = getattr(data, name)
        img = loader()
        if img.ndim == 2:
            img = np.stack([img] * 3, -1)
        caption = loader.__doc__.strip().splitlines()[0].strip()
        out.append((img[..., :3].astype(np.uint8) if img.dtype == np.uint8 else (img[..., :3] * 255).astype(np.uint8), caption))
    return out


def make_tokenizer(words: list[str], folder: Path):
    """A word-level fast tokenizer over ``words`` (lower-cased, punctuation-free), saved to ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for w in sorted({w for text in words for w in re.findall(r"[a-z0-9<>]+", text.lower())}):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   bos_token="<s>")
    fast.save_pretrained(folder)
    return fast


def make_siglip_text_tower(words: list[str], folder: Path, hidden: int = 64) -> Path:
    """A 2-layer SigLIP text model of width ``hidden`` with its tokenizer, saved to ``folder``."""
    from transformers import SiglipTextConfig, SiglipTextModel

    tok = make_tokenizer(words, folder)
    torch.manual_seed(0)
    config = SiglipTextConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                              num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64,
                              pad_token_id=0, bos_token_id=3, eos_token_id=1)
    SiglipTextModel(config).save_pretrained(folder)
    return folder


def make_llama(words: list[str], folder: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = make_tokenizer(words, folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=0, bos_token_id=3, eos_token_id=1,
                         initializer_range=0.2)  # a toy LM needs logits large enough to be fit by LoRA quickly
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder
