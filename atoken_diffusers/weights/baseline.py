"""The linear baseline every embedded-model figure stands beside, and the patch-grid measure.

``PCACodec`` keeps, per 16 x 16 patch (or 4 x 16 x 16 video patch), the ``components`` leading principal components
(48 = one AToken token's floats), fitted with one SVD on patches of the *training* media: the simplest codec with
exactly AToken's latent budget. A learned transformer codec with context should beat it.

``grid_ratio`` is the mean absolute pixel step across 16-px patch borders divided by the mean step inside patches:
about 1.0-1.1 for photographs, 1.8-2.0 for PCA, 5-7 for blocky reconstructions.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..tokens.patchify import PATCH_SIZE, grid_to_tokens, pad_to_patches, tokens_to_grid


def to_patches(x: torch.Tensor, frames: int = 1) -> torch.Tensor:
    """(B, 3, H, W) images or (B, 3, T, H, W) videos in [-1, 1] -> (N, frames * 768) patch vectors (token order,
    values (pt, ph, pw, c)); images use frame 0 of each token (``frames=1``), videos all four (``frames=4``)."""
    clip = x[:, :, None] if x.ndim == 4 else x
    feats = grid_to_tokens(pad_to_patches(clip.float(), PATCH_SIZE), PATCH_SIZE).feats
    return feats[:, : frames * PATCH_SIZE[1] * PATCH_SIZE[2] * 3]


def from_patches(patches: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_patches` for one batch shaped like ``like`` (cropped back to its size)."""
    clip = like[:, :, None] if like.ndim == 4 else like
    b, _, t, h, w = clip.shape
    pt, ph, pw = PATCH_SIZE
    grid = (-(-t // pt), -(-h // ph), -(-w // pw))
    full = patches.new_zeros(patches.shape[0], pt * ph * pw * 3)
    full[:, : patches.shape[1]] = patches
    out = tokens_to_grid(full, (b, *grid), PATCH_SIZE, channels=3)[:, :, :t, :h, :w]
    return out[:, :, 0] if like.ndim == 4 else out


class PCACodec:
    """Per-patch PCA: ``encode`` -> (N, components) coefficients, ``decode`` -> patches.

    Args:
        mean: (D,) mean patch; basis: (D, components) orthonormal columns; frames: 1 (images) or 4 (videos).
    """

    def __init__(self, mean: torch.Tensor, basis: torch.Tensor, frames: int = 1, scale: float = 1.0):
        self.mean, self.basis, self.frames = mean, basis, frames
        self.scale = scale  # latent scale for a model started from this codec: scale * coefficients has std ~1

    def save(self, path: str | os.PathLike) -> Path:
        """Write the codec as safetensors (temp file + rename, so a reader never sees half a file)."""
        from safetensors.torch import save_file

        from ..utils.atomic import write_atomically

        write_atomically(path, lambda tmp: save_file({"mean": self.mean.contiguous(), "basis": self.basis.contiguous()}, tmp,
                                            metadata={"frames": str(self.frames), "scale": repr(self.scale)}))
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PCACodec":
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            mean, basis = f.get_tensor("mean").float(), f.get_tensor("basis").float()
        frames = int(meta.get("frames", 1))
        if mean.ndim != 1 or basis.ndim != 2 or basis.shape[0] != mean.shape[0] or mean.shape[0] != frames * 768:
            raise ValueError(f"{path}: not a PCA codec file (mean {tuple(mean.shape)}, basis {tuple(basis.shape)}, "
                             f"frames {frames}).")
        return cls(mean, basis, frames, float(meta.get("scale", 1.0)))

    @classmethod
    def fit(cls, patches: torch.Tensor, components: int = 48, frames: int = 1) -> "PCACodec":
        """Fit on (N, D) training patches (float64 SVD, so the basis does not depend on BLAS rounding)."""
        if patches.shape[0] < components:
            raise ValueError(f"patches: need at least {components} patches to fit {components} components; "
                             f"got {patches.shape[0]}.")
        p = patches.double()
        mean = p.mean(0)
        _, _, vh = torch.linalg.svd(p - mean, full_matrices=False)
        vh = vh * torch.where(vh.sum(1, keepdim=True) < 0, -1.0, 1.0)  # fix the SVD's arbitrary signs
        basis = vh[:components].t().contiguous()
        scale = float(1.0 / ((p - mean) @ basis).pow(2).mean().sqrt().clamp_min(1e-12))
        return cls(mean.float(), basis.float(), frames, scale)

    def encode(self, patches: torch.Tensor) -> torch.Tensor:
        return (patches.float() - self.mean) @ self.basis

    def decode(self, coefficients: torch.Tensor) -> torch.Tensor:
        return coefficients @ self.basis.t() + self.mean

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) or videos (B, 3, T, H, W) in [-1, 1] through the codec, clamped to [-1, 1]."""
        return from_patches(self.decode(self.encode(to_patches(x, self.frames))), x).clamp(-1, 1)


def grid_ratio(x: torch.Tensor, patch: int = PATCH_SIZE[1]) -> float:
    """Mean |pixel step| across ``patch``-px borders / mean |step| inside patches, over both axes; ``x`` (..., H, W)."""
    x = x.float()
    dh, dw = (x[..., 1:, :] - x[..., :-1, :]).abs(), (x[..., :, 1:] - x[..., :, :-1]).abs()
    border_h = torch.arange(1, x.shape[-2]) % patch == 0  # step between row i-1 and i crosses a border when i % p == 0
    border_w = torch.arange(1, x.shape[-1]) % patch == 0
    across = torch.cat([dh[..., border_h, :].flatten(), dw[..., border_w].flatten()]).mean()
    inside = torch.cat([dh[..., ~border_h, :].flatten(), dw[..., ~border_w].flatten()]).mean()
    return float(across / inside.clamp_min(1e-12))


def sample_views(files: list, views_per_file: int = 4, size: int = 256, seed: int = 0):
    """Random square views of ``files`` resized to ``size`` px, (1, 3, size, size) in [-1, 1], the scale range the
    embedded model trains at (a view covers 1/4 to all of the picture's shorter side, after a 4 x ``size``
    thumbnail)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for f in files:
        with Image.open(f) as im:
            im = im.convert("RGB")
            im.thumbnail((4 * size, 4 * size), Image.Resampling.LANCZOS)
            a = np.asarray(im)
        for _ in range(views_per_file):
            side = int(min(a.shape[:2]) * rng.uniform(0.25, 1.0))
            y, x = int(rng.integers(a.shape[0] - side + 1)), int(rng.integers(a.shape[1] - side + 1))
            view = torch.from_numpy(a[y:y + side, x:x + side].copy()).permute(2, 0, 1).float()[None] / 127.5 - 1
            yield F.interpolate(view, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp(-1, 1)


def sample_image_patches(files: list, views_per_file: int = 4, patches_per_view: int = 64, size: int = 256,
                         seed: int = 0) -> torch.Tensor:
    """(N, 768) random patches of :func:`sample_views` of ``files``."""
    rng, out = np.random.default_rng(seed), []
    for view in sample_views(files, views_per_file, size, seed):
        patches = to_patches(view)
        out.append(patches[torch.from_numpy(rng.choice(len(patches), min(patches_per_view, len(patches)), replace=False))])
    return torch.cat(out)


def sample_video_patches(files: list, clips_per_file: int = 8, patches_per_clip: int = 64, size: int = 256,
                         frames: int = 16, max_frames: int = 64, seed: int = 0) -> torch.Tensor:
    """(N, 3072) 4 x 16 x 16 patches of random ``frames``-frame clips of ``files`` (shorter side resized to ``size``,
    centre-cropped square: the held-out clip's protocol)."""
    from ..utils.media import load_video, resize_centre_crop

    rng, out = np.random.default_rng(seed), []
    for f in files:
        video, _ = load_video(f, max_frames=max_frames)                    # (1, 3, T, H, W)
        video = resize_centre_crop(video[0].transpose(0, 1), size, mode="bilinear").clamp(-1, 1)  # (T, 3, size, size)
        for _ in range(clips_per_file):
            start = int(rng.integers(max(1, video.shape[0] - frames + 1)))
            clip = video[start:start + frames].transpose(0, 1)[None]         # (1, 3, frames, size, size)
            patches = to_patches(clip, frames=4)
            out.append(patches[torch.from_numpy(rng.choice(len(patches), min(patches_per_clip, len(patches)), replace=False))])
    return torch.cat(out)
