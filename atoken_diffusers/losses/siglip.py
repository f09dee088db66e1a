"""SigLIP's pairwise sigmoid loss (Zhai et al. 2023): every (visual, text) pair is a binary problem, positive on the
diagonal."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def siglip_sigmoid_loss(visual: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | float,
                        logit_bias: torch.Tensor | float) -> torch.Tensor:
    """Mean over visual rows of -sum_j log sigmoid(z_ij * (exp(scale) * cos_ij + bias)), z = +1 on the diagonal."""
    if visual.shape != text.shape:
        raise ValueError(f"visual and text embeddings must be paired (same shape); got {visual.shape} and {text.shape}.")
    scale = torch.as_tensor(logit_scale, device=visual.device, dtype=torch.float32)
    logits = scale.exp() * (F.normalize(visual.float(), dim=-1) @ F.normalize(text.float(), dim=-1).t()) + logit_bias
    labels = 2 * torch.eye(logits.shape[0], device=logits.device) - 1
    return -F.logsigmoid(labels * logits).sum() / logits.shape[0]
