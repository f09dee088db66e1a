"""Reconstruction metrics of one item (PSNR, SSIM, LPIPS) and of a set (rFID, rFVD).

PSNR and SSIM are the project's own (``utils.metrics``: the [0, 1] scale, an 11 x 11 Gaussian window), the functions
every earlier figure of the project was measured with. LPIPS is ``losses.lpips.LPIPS`` (VGG16), video frames scored as
images and averaged. rFID / rFVD are Fréchet distances (:func:`frechet_distance`, the value torchmetrics'
``FrechetInceptionDistance`` gives) over features the evaluation loop stored per item (Inception pool3 for images,
I3D logits for clips), so a resumed or multi-process run computes them from the same numbers as a single pass.
"""

from __future__ import annotations

import torch
from torch import nn

from ..utils.metrics import psnr, ssim

LPIPS_CHUNK = 16  # frames per LPIPS call: bounds the VGG activations of long clips


def pixel_scores(rec: torch.Tensor, x: torch.Tensor) -> dict[str, float]:
    """PSNR (dB) and SSIM of a reconstruction ``rec`` of ``x``: images (B, 3, H, W) or videos (B, 3, T, H, W) in
    [-1, 1]."""
    return {"psnr": psnr(rec, x), "ssim": ssim(rec, x)}


def as_frames(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) images or (B, 3, T, H, W) videos -> (N, 3, H, W) frames."""
    return x.transpose(1, 2).flatten(0, 1) if x.ndim == 5 else x


@torch.no_grad()
def lpips_distance(lpips: nn.Module, rec: torch.Tensor, x: torch.Tensor) -> float:
    """Mean LPIPS over the frames of ``rec`` against ``x`` (images or videos in [-1, 1]); 0 for identical inputs."""
    device = next(lpips.buffers()).device
    a, b = as_frames(rec), as_frames(x)
    total = 0.0
    for start in range(0, a.shape[0], LPIPS_CHUNK):
        chunk = slice(start, start + LPIPS_CHUNK)
        n = a[chunk].shape[0]
        total += float(lpips(a[chunk].to(device).float(), b[chunk].to(device).float())) * n
    return total / a.shape[0]


@torch.no_grad()
def features(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, F) float32 features of images/clips ``x`` in [-1, 1] on the network's device, returned on the CPU."""
    device = next(network.parameters()).device
    out = network(x.to(device).float()).float().cpu()
    if not torch.isfinite(out).all():
        raise FloatingPointError(f"{type(network).__name__} features are NaN/Inf; check its weights file.")
    return out


def _covariance_factor(feats: torch.Tensor) -> torch.Tensor:
    """L with L @ L.T == the sample covariance of (N, F) ``feats``: the scaled centred features (F, N) when N <= F,
    else the symmetric square root of the (F, F) covariance, so L has at most min(N, F) columns."""
    centred = (feats - feats.mean(0)).t() / (feats.shape[0] - 1) ** 0.5
    if feats.shape[0] <= feats.shape[1]:
        return centred
    values, vectors = torch.linalg.eigh(centred @ centred.t())
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.t()


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Fréchet distance ||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)) between Gaussians fitted to ``real`` and
    ``fake`` features, (N, F) each with N >= 2, in float64. 0 for a set against itself; grows as the sets drift
    apart. The value of torchmetrics' FrechetInceptionDistance (a test checks it), computed without its
    non-symmetric eigendecomposition of a 2048 x 2048 matrix (~40 s per distance on two CPU cores): with
    S = L L^T, the eigenvalues of S_r S_f are the squared singular values of L_r^T L_f, so the trace of the square
    root is that matrix's nuclear norm.

    Raises:
        ValueError when a set has fewer than 2 items or the widths differ.
    """
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"features: need (N, F) sets of one width; got {tuple(real.shape)} and {tuple(fake.shape)}.")
    if min(real.shape[0], fake.shape[0]) < 2:
        raise ValueError(f"a Fréchet distance needs at least 2 items per set; got {real.shape[0]} and {fake.shape[0]}.")
    real, fake = real.double(), fake.double()
    lr, lf = _covariance_factor(real), _covariance_factor(fake)
    cross = torch.linalg.svdvals(lr.t() @ lf).sum()
    distance = (real.mean(0) - fake.mean(0)).square().sum() + lr.square().sum() + lf.square().sum() - 2 * cross
    return max(0.0, float(distance))  # round-off can give -1e-12 for identical sets
