"""Semantic distillation for images (AToken's recipe): the student's image-text logits are pulled towards a frozen
teacher's (SigLIP2) with a KL divergence between their softmaxes over the texts at temperature 2."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, text: torch.Tensor, temperature: float = 2.0,
                      logit_scale: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) of softmax(logits / T) over the texts, times T^2 (Hinton et al.), batch mean.

    Args:
        student, teacher: (B, D) image embeddings (normalised here).
        text: (L, D) text embeddings, L >= 2 (e.g. the batch's captions).
        logit_scale: multiplier of the cosine similarities (the teacher's exp(logit_scale) for SigLIP models).
    """
    if student.shape != teacher.shape or text.ndim != 2 or text.shape[1] != student.shape[1]:
        raise ValueError(f"student {tuple(student.shape)}, teacher {tuple(teacher.shape)} and text "
                         f"{tuple(text.shape)} embeddings must share D (paired (B, D), (L, D)).")
    if text.shape[0] < 2:
        raise ValueError(f"text must hold at least 2 embeddings (a softmax over one text is constant); got {text.shape[0]}.")
    text = F.normalize(text.float(), dim=-1)
    s = logit_scale * F.normalize(student.float(), dim=-1) @ text.t()
    t = logit_scale * F.normalize(teacher.float(), dim=-1) @ text.t()
    return F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                    reduction="batchmean") * temperature**2
