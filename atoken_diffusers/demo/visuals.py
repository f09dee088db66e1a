"""Pictures of what the tokenizer does, as uint8 (H, W, 3) arrays: error maps, a colour view of the latent channels,
FSQ index maps and codebook usage. Pure numpy/torch, no plotting library."""

from __future__ import annotations

import math

import numpy as np
import torch

# Anchor colours of a dark-to-bright ramp (black, purple, red, orange, pale yellow) for error heat maps.
_RAMP = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32)


def colour_ramp(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 colours (..., 3) on the ramp."""
    t = np.clip(np.nan_to_num(values.astype(np.float32)), 0, 1) * (len(_RAMP) - 1)
    lo = np.floor(t).astype(np.int64).clip(0, len(_RAMP) - 2)
    frac = (t - lo)[..., None]
    return np.round(_RAMP[lo] * (1 - frac) + _RAMP[lo + 1] * frac).astype(np.uint8)


def error_map(x: torch.Tensor, y: torch.Tensor, full_scale: float = 0.25) -> np.ndarray:
    """Heat map of the per-pixel absolute error of two images (1, 3, H, W) in [-1, 1], averaged over channels, on the
    [0, 1] scale; ``full_scale`` (an error of 0.25 by default) is the brightest colour."""
    err = ((x.float() - y.float()).abs() / 2).mean(dim=1)[0].cpu().numpy()
    return colour_ramp(err / full_scale)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement of an (h, w, 3) array, so that one latent cell covers its 16 x 16 pixels."""
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def latent_pca(z: torch.Tensor) -> np.ndarray:
    """Colour view of image latents (1, C, h, w): the three main principal components of the C channels over the
    h * w cells become red, green and blue (each stretched between its 1st and 99th percentile). Returns (h, w, 3)."""
    c, h, w = z.shape[1:]
    cells = z[0].float().reshape(c, h * w).t().cpu()
    cells = cells - cells.mean(dim=0, keepdim=True)
    k = min(3, c, h * w)
    if k == 0 or not torch.any(cells != 0):
        return np.zeros((h, w, 3), np.uint8)
    _, _, v = torch.linalg.svd(cells, full_matrices=False)
    proj = (cells @ v[:k].t()).numpy()
    proj = np.concatenate([proj, np.zeros((h * w, 3 - k), np.float32)], axis=1)
    lo, hi = np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)
    unit = (proj - lo) / np.where(hi > lo, hi - lo, 1)
    return np.round(np.clip(unit, 0, 1) * 255).astype(np.uint8).reshape(h, w, 3)


def index_colours(indices: np.ndarray) -> np.ndarray:
    """A fixed, well-spread colour per codebook index (multiplicative hash to 24 bits): (...,) ints -> (..., 3)."""
    code = (indices.astype(np.uint64) * np.uint64(2654435761)) % np.uint64(1 << 24)
    rgb = np.stack([(code >> np.uint64(s)) & np.uint64(255) for s in (16, 8, 0)], axis=-1)
    return rgb.astype(np.uint8)


def index_maps(indices: torch.Tensor) -> list[np.ndarray]:
    """FSQ indices of one image (1, K, h, w) -> K colour images (h, w, 3), one per codebook."""
    arr = indices[0].cpu().numpy()
    return [index_colours(codebook) for codebook in arr]


def codebook_usage(indices: torch.Tensor, codebook_size: int) -> list[dict]:
    """Per codebook of FSQ indices (B, K, ...): codes used, the fraction of the codebook they are, the perplexity
    (exp of the entropy of the code frequencies) and the commonest code."""
    flat = indices.transpose(0, 1).reshape(indices.shape[1], -1).cpu()
    rows = []
    for k, codes in enumerate(flat):
        counts = torch.bincount(codes, minlength=codebook_size).double()
        p = counts[counts > 0] / counts.sum()
        used = int((counts > 0).sum())
        rows.append({"codebook": k, "tokens": int(codes.numel()), "codes used": used,
                     "fraction used": used / codebook_size, "perplexity": math.exp(float(-(p * p.log()).sum())),
                     "top code": int(counts.argmax())})
    return rows


def code_histogram(indices: torch.Tensor, codebook_size: int, bins: int = 64) -> list[dict]:
    """Token counts per codebook over ``bins`` equal ranges of code indices: rows of (codebook, codes, count)."""
    width = max(1, -(-codebook_size // bins))
    flat = indices.transpose(0, 1).reshape(indices.shape[1], -1).cpu()
    rows = []
    for k, codes in enumerate(flat):
        counts = torch.bincount(codes // width, minlength=-(-codebook_size // width))
        rows += [{"codebook": str(k), "codes": b * width, "count": int(n)} for b, n in enumerate(counts.tolist())]
    return rows


def side_by_side(images: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Place uint8 (H, W, 3) images of one height in a row, separated by white gaps."""
    h = max(im.shape[0] for im in images)
    parts = []
    for i, im in enumerate(images):
        if i:
            parts.append(np.full((h, gap, 3), 255, np.uint8))
        parts.append(np.pad(im, ((0, h - im.shape[0]), (0, 0), (0, 0)), constant_values=255))
    return np.concatenate(parts, axis=1)
