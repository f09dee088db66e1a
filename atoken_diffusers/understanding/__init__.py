"""Understanding: zero-shot classification, retrieval, and AToken as the vision tower of a multimodal LLM."""

from .retrieval import recall_at_k, similarity
from .text import TEMPLATES, TextTower, normalize_text
from .zero_shot import LOGIT_BIAS, LOGIT_SCALE, ZeroShotClassifier, embed_visual, siglip_logits

__all__ = [
    "LOGIT_BIAS", "LOGIT_SCALE", "TEMPLATES", "TextTower", "ZeroShotClassifier", "embed_visual", "normalize_text",
    "recall_at_k", "siglip_logits", "similarity",
]
