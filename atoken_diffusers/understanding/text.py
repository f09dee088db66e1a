"""The text side of AToken's semantic space: a SigLIP2 (or SigLIP) text tower loaded from a local folder.

AToken's pooled embedding was trained against a frozen SigLIP2 So400m text tower; the release does not ship it.
Text is normalised as the official code does before tokenising (HTML entities unescaped, underscores to spaces,
punctuation removed, lower case, whitespace collapsed) and padded/truncated to 64 tokens, because SigLIP pools the
last position.
"""

from __future__ import annotations

import html
import string
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

CONTEXT_LENGTH = 64
_PUNCTUATION = str.maketrans("", "", string.punctuation)

# A few of the standard zero-shot prompt templates (CLIP/SigLIP ImageNet set); "{}" is the label.
TEMPLATES = (
    "a photo of a {}.",
    "a good photo of a {}.",
    "a close-up photo of a {}.",
    "a photo of the {}.",
    "a rendering of a {}.",
    "a video of a {}.",
)


def normalize_text(text: str) -> str:
    """The official text cleaning (ftfy's repair too when ftfy is installed)."""
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip().replace("_", " ")
    return " ".join(text.translate(_PUNCTUATION).lower().split())


class TextTower:
    """A SigLIP-family text encoder and its tokenizer.

    Args:
        model: a transformers model with ``get_text_features`` (full SigLIP/SigLIP2) or returning ``pooler_output``
            (``SiglipTextModel``/``Siglip2TextModel``).
        tokenizer: the matching tokenizer.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, context_length: int = CONTEXT_LENGTH):
        self.model = model
        self.tokenizer = tokenizer
        self.context_length = context_length

    @classmethod
    def from_pretrained(cls, path: str | Path, torch_dtype: torch.dtype | None = None, device=None) -> "TextTower":
        """Load from a local folder (never from a hub)."""
        import transformers
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"text model path {str(path)!r} has no config.json; pass a local folder holding a SigLIP2/SigLIP "
                "text model and tokenizer (e.g. a saved google/siglip2-so400m-patch16-naflex)."
            )
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        # Text-only SigLIP configs have no AutoModel mapping; full SigLIP/SigLIP2 models do.
        text_only = {"siglip_text_model": "SiglipTextModel", "siglip2_text_model": "Siglip2TextModel"}
        cls_ = getattr(transformers, text_only[config.model_type]) if config.model_type in text_only else AutoModel
        model = cls_.from_pretrained(path, local_files_only=True, dtype=torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        return cls(model.eval().to(device) if device else model.eval(), tokenizer)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        cleaned = [normalize_text(t) for t in texts]
        out = self.tokenizer(
            cleaned, return_tensors="pt", max_length=self.context_length, padding="max_length", truncation=True
        )
        return out["input_ids"]

    def encode(self, texts: Sequence[str], normalize: bool = True) -> torch.Tensor:
        """(len(texts), dim) text embeddings, L2-normalised by default."""
        if isinstance(texts, str) or not len(texts):
            raise ValueError("texts must be a non-empty list of strings.")
        device = next(self.model.parameters()).device
        ids = self.tokenize(texts).to(device)
        if hasattr(self.model, "get_text_features"):
            feats = self.model.get_text_features(input_ids=ids)
            feats = getattr(feats, "pooler_output", feats)
        else:
            feats = self.model(input_ids=ids).pooler_output
        return F.normalize(feats, dim=-1) if normalize else feats
