"""Zero-shot classification with AToken's pooled embedding and a SigLIP text tower.

SigLIP scores a pair with logits = exp(logit_scale) * cos(visual, text) + logit_bias and turns each logit into an
independent probability with a sigmoid (not a softmax over labels). The official release hard-codes the trained
values logit_scale = 4.8438 and logit_bias = -15.5625; they are the defaults here.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from ..tokens.sparse import SparseTokens
from .text import TEMPLATES, TextTower

LOGIT_SCALE = 4.8438
LOGIT_BIAS = -15.5625


def siglip_logits(visual: torch.Tensor, text: torch.Tensor, logit_scale: float = LOGIT_SCALE,
                  logit_bias: float = LOGIT_BIAS) -> torch.Tensor:
    """(B, D) and (L, D) embeddings (any norm) -> (B, L) logits."""
    if visual.ndim != 2 or text.ndim != 2 or visual.shape[1] != text.shape[1]:
        raise ValueError(
            f"visual (B, D) and text (L, D) embeddings must share D; got {tuple(visual.shape)} and {tuple(text.shape)}."
        )
    cos = F.normalize(visual.float(), dim=-1) @ F.normalize(text.float(), dim=-1).t()
    return math.exp(logit_scale) * cos + logit_bias


def embed_visual(model, x) -> torch.Tensor:
    """Pooled, normalised embeddings of images (B, 3, H, W), videos (B, 3, T, H, W) or a 3D/packed token set."""
    if isinstance(x, SparseTokens):
        return model.encode_tokens(x).embedding
    return model.embed(x)


class ZeroShotClassifier:
    """Label embeddings are computed once (averaged over prompt templates) and reused for every query.

    Args:
        model: an ``AutoencoderAToken``.
        text_tower: a :class:`TextTower` whose embedding size equals the model's ``encoder_dim``.
        labels: class names.
        templates: prompt templates with one ``{}``; ``("{}",)`` uses the bare labels.
    """

    def __init__(self, model, text_tower: TextTower, labels: Sequence[str], templates: Sequence[str] = TEMPLATES,
                 logit_scale: float = LOGIT_SCALE, logit_bias: float = LOGIT_BIAS):
        labels = [label.strip() for label in labels if label.strip()]
        if not labels:
            raise ValueError("labels is empty; pass at least one class name, e.g. ['cat', 'dog'].")
        if not templates or any("{}" not in t for t in templates):
            raise ValueError("templates must be a non-empty list of strings that each contain '{}'.")
        self.model, self.text_tower, self.labels = model, text_tower, labels
        self.logit_scale, self.logit_bias = logit_scale, logit_bias
        with torch.no_grad():
            prompts = [t.format(label) for label in labels for t in templates]
            emb = text_tower.encode(prompts).view(len(labels), len(templates), -1).mean(1)
        self.label_embeddings = F.normalize(emb, dim=-1)
        dim = model.config.encoder_dim
        if self.label_embeddings.shape[1] != dim:
            raise ValueError(
                f"the text tower gives {self.label_embeddings.shape[1]}-dim embeddings but the AToken model's are "
                f"{dim}-dim; use the SigLIP2 text tower matching the model (So400m: 1152)."
            )

    @torch.no_grad()
    def logits(self, x) -> torch.Tensor:
        visual = embed_visual(self.model, x)
        return siglip_logits(visual, self.label_embeddings.to(visual.device), self.logit_scale, self.logit_bias)

    def probabilities(self, x) -> torch.Tensor:
        """(B, num_labels) independent sigmoid probabilities."""
        return torch.sigmoid(self.logits(x))

    def classify(self, x, top_k: int = 5) -> list[list[tuple[str, float]]]:
        """For each sample, the ``top_k`` (label, probability) pairs, best first."""
        probs = self.probabilities(x)
        values, index = probs.topk(min(top_k, len(self.labels)), dim=-1)
        return [[(self.labels[i], v) for i, v in zip(row_i.tolist(), row_v.tolist())] for row_i, row_v in zip(index, values)]
