"""Text-to-visual and visual-to-text retrieval with Recall@K."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def similarity(visual: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """(Nv, D), (Nt, D) -> (Nv, Nt) cosine similarities."""
    if visual.shape[-1] != text.shape[-1]:
        raise ValueError(f"visual and text embeddings must share their last dim; got {visual.shape} and {text.shape}.")
    return F.normalize(visual.float(), dim=-1) @ F.normalize(text.float(), dim=-1).t()


def recall_at_k(visual: torch.Tensor, text: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@K both ways for paired embeddings (row i of ``visual`` belongs with row i of ``text``)."""
    if visual.shape[0] != text.shape[0]:
        raise ValueError(
            f"recall_at_k needs one caption per visual sample; got {visual.shape[0]} visual and {text.shape[0]} text rows."
        )
    sim = similarity(visual, text)
    target = torch.arange(sim.shape[0], device=sim.device)
    # rank of the true partner for each query (0 = retrieved first)
    t2v = (sim.t() > sim.t()[target, target][:, None]).sum(1)
    v2t = (sim > sim[target, target][:, None]).sum(1)
    out = {}
    for k in ks:
        out[f"text_to_visual_R@{k}"] = (t2v < k).float().mean().item()
        out[f"visual_to_text_R@{k}"] = (v2t < k).float().mean().item()
    return out
