"""AToken's adversarial-free training objective (paper section 3.4, DESIGN section 8).

    loss = w_rec * reconstruction + w_sem * semantic + w_kl * KL
    image reconstruction = L1 (native size) + 10 LPIPS + 1000 Gram + 1 CLIP-feature, the last three on 224 px resizes
    video / 3D reconstruction = L1
    (optional, off by default: + mse * MSE + gradient * L1 of pixel differences; the embedded default uses them)
    image semantic = KL distillation from a frozen SigLIP2 teacher (T = 2); video / 3D semantic = SigLIP sigmoid loss

Every optional network (LPIPS, Gram, CLIP-feature, teacher, text tower) may be absent; its term is then skipped and
reported as absent, so a run without local perceptual weights is explicit rather than silently different.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .distillation import distillation_loss
from .siglip import siglip_sigmoid_loss


@dataclass
class LossWeights:
    reconstruction: float = 0.2
    semantic: float = 1.0
    kl: float = 1e-8
    l1: float = 1.0
    mse: float = 0.0          # squared error beside L1 (what PSNR measures); the paper uses L1 alone
    gradient: float = 0.0     # L1 between neighbouring-pixel differences: penalises steps at patch borders
    lpips: float = 10.0
    gram: float = 1000.0
    feature: float = 1.0
    perceptual_size: int = 224
    temperature: float = 2.0


def gaussian_kl(moments: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, var) || N(0, 1)) summed over channels, mean over tokens; ``moments`` (N, 2C) = [mean | logvar]."""
    mean, logvar = moments.float().chunk(2, dim=-1)
    logvar = logvar.clamp(-30.0, 20.0)
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1).mean()


def resize_batch(images: list[torch.Tensor], size: int) -> torch.Tensor:
    """(3, H_i, W_i) images of any sizes -> one (B, 3, size, size) batch (bilinear, antialiased)."""
    return torch.cat([F.interpolate(im[None].float(), size=(size, size), mode="bilinear", align_corners=False,
                                    antialias=True) for im in images])


def pixel_loss(recon: list[torch.Tensor], target: list[torch.Tensor], weights: LossWeights, terms: dict) -> torch.Tensor:
    """``l1`` * L1 + ``mse`` * MSE + ``gradient`` * L1 of the horizontal/vertical pixel differences, averaged over
    the samples (images (3, H, W), videos (3, T, H, W) or voxel features (N, 768)); terms with weight 0 are skipped."""
    pairs = [(r.float(), t.float()) for r, t in zip(recon, target)]
    total = torch.stack([F.l1_loss(r, t) for r, t in pairs]).mean()
    terms["l1"] = total.detach()
    total = total * weights.l1
    if weights.mse:
        mse = torch.stack([F.mse_loss(r, t) for r, t in pairs]).mean()
        terms["mse"] = mse.detach()
        total = total + weights.mse * mse
    if weights.gradient and all(t.ndim >= 3 for _, t in pairs):
        def diffs(v):
            return v.diff(dim=-1).flatten(), v.diff(dim=-2).flatten()
        grad = torch.stack([F.l1_loss(torch.cat(diffs(r)), torch.cat(diffs(t))) for r, t in pairs]).mean()
        terms["gradient"] = grad.detach()
        total = total + weights.gradient * grad
    return total


class ATokenLoss(nn.Module):
    """Args:
    weights: :class:`LossWeights`.
    lpips, gram, feature: perceptual modules called as ``fn(reconstruction, target)`` on (B, 3, S, S) in [-1, 1].
    teacher: a frozen vision tower returning (features, pooled embedding) for images (distillation teacher).
    logit_scale, logit_bias: log-scale and bias of the SigLIP logits (sigmoid loss and distillation scale).
    """

    def __init__(self, weights: LossWeights | None = None, lpips: nn.Module | None = None, gram: nn.Module | None = None,
                 feature: nn.Module | None = None, teacher: nn.Module | None = None, logit_scale: float = 4.8438,
                 logit_bias: float = -15.5625):
        super().__init__()
        self.weights = weights or LossWeights()
        self.lpips, self.gram, self.feature, self.teacher = lpips, gram, feature, teacher
        self.logit_scale, self.logit_bias = logit_scale, logit_bias

    def _image_reconstruction(self, recon: list[torch.Tensor], target: list[torch.Tensor], terms: dict) -> torch.Tensor:
        w = self.weights
        total = pixel_loss(recon, target, w, terms)
        if self.lpips is None and self.gram is None and self.feature is None:
            return total
        r224, t224 = resize_batch(recon, w.perceptual_size), resize_batch(target, w.perceptual_size)
        for name, fn, weight in (("lpips", self.lpips, w.lpips), ("gram", self.gram, w.gram),
                                 ("feature", self.feature, w.feature)):
            if fn is not None and weight:
                value = fn(r224, t224)
                terms[name] = value.detach()
                total = total + weight * value
        return total

    def forward(self, kind: str, recon: list[torch.Tensor], target: list[torch.Tensor], moments: torch.Tensor,
                embedding: torch.Tensor, text: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """Total loss of one task batch and its detached terms.

        Args:
            kind: ``"image"``, ``"video"`` or ``"3d"``.
            recon, target: per-sample reconstructions and targets (images (3, H, W), videos (3, T, H, W), voxel
                features (N, 768)) in [-1, 1].
            moments: (N, 2C) posterior moments of all tokens (KL); may be None for FSQ stages.
            embedding: (B, D) student embeddings.
            text: (B, D) caption embeddings from the frozen text tower, or None (no semantic term).
        """
        w, terms = self.weights, {}
        if kind == "image":
            rec = self._image_reconstruction(recon, target, terms)
        else:
            rec = pixel_loss(recon, target, w, terms)
        total = w.reconstruction * rec
        if moments is not None and w.kl:
            kl = gaussian_kl(moments)
            terms["kl"] = kl.detach()
            total = total + w.kl * kl
        semantic = None
        if text is not None and w.semantic:
            if kind == "image" and self.teacher is not None:
                with torch.no_grad():
                    teacher_emb = self.teacher(resize_batch(target, w.perceptual_size))[1]
                semantic = distillation_loss(embedding, teacher_emb, text, w.temperature, math.exp(self.logit_scale))
            elif kind != "image":
                semantic = siglip_sigmoid_loss(embedding, text, self.logit_scale, self.logit_bias)
        if semantic is not None:
            terms["semantic"] = semantic.detach()
            total = total + w.semantic * semantic
        else:
            total = total + 0.0 * embedding.sum()  # keep the pooling head in the graph (DDP needs every parameter)
        terms["loss"] = total.detach()
        return total, terms
