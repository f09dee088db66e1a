"""Closed-form last steps of the embedded default: the decoder's output projection refitted by least squares, and
the strength of its deblocking filter chosen, both on training views.

Stochastic training leaves the last linear map short of its optimum for the trunk it ends with (the EMA of noisy
steps). Given the decoder's final hidden states on training views, the pixel-optimal map is one linear solve. Measured
on the GPU-trained stage 1: training MSE 0.00240 -> 0.00236, held-out photographs +0.06 dB. Training on images alone
leaves the rows that write frames 1-3 of a video patch where the start put them, out of step with the trained trunk
(held-out clip 45.4 dB, below PCA-48's 45.6); refitting them on training clips brings them back.
"""

from __future__ import annotations

import torch

from ..tokens.patchify import PATCH_SIZE, grid_to_tokens, pad_to_patches, smooth_patch_borders, tokens_to_grid

# Relative ridge: the hidden states carry large constant channels (see training/context_init.py), so the Gram matrix
# is badly conditioned; a larger ridge (1e-4) bends the solution towards those channels (measured: -1.4 dB).
RIDGE = 1e-6
DEBLOCK_STRENGTHS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)


def _latents(model, tokens):
    """What the decoder reads: the posterior mean, or its FSQ codes for FSQ models."""
    z = model.encode_tokens(tokens).latent_dist.mean
    return z if model.quantizer is None else model.quantizer.quantize(z)[0]


@torch.no_grad()
def refit_output_projection(model, views, frames: slice = slice(0, 1), ridge: float = RIDGE) -> dict:
    """Refit the rows of ``model.decoder.proj_out`` that write the patch frames ``frames`` (of the 4 in a patch) by
    least squares on ``views``, in place.

    Args:
        views: iterable of (1, 3, H, W) training images or (1, 3, T, H, W) clips in [-1, 1], H and W multiples of 16
            (T of 4; at most one decoder tile of frames, so one view decodes as one group in raster order).
        frames: the rows to refit: images ``slice(0, 1)`` (the default: an image is frame 0 of its patch), the
            later frames of clips ``slice(1, 4)``.
    Returns {"tokens", "mse_before", "mse_after"} (pixel MSE of those rows on ``views``, [-1, 1] units).
    """
    proj = model.decoder.proj_out
    per_frame = PATCH_SIZE[1] * PATCH_SIZE[2] * 3
    rows = slice(frames.start * per_frame, frames.stop * per_frame)
    seen = {}
    hook = proj.register_forward_hook(lambda mod, args, out: seen.update(hidden=args[0], out=out))
    gram, cross, yy, count = 0.0, 0.0, 0.0, 0
    try:
        for v in views:
            clip = v[:, :, None] if v.ndim == 4 else v
            tokens = grid_to_tokens(pad_to_patches(clip.to(model.device, model.dtype)))
            out = model.decode_tokens(tokens.replace(_latents(model, tokens))).feats
            if not torch.equal(out, seen["out"]):
                raise RuntimeError("decoder rows are not in token order; give views of at most one decoder tile.")
            h = seen["hidden"].double()
            y = tokens.feats[:, rows].double()
            gram, cross = gram + h.t() @ h, cross + h.t() @ y
            yy, count = yy + float(y.pow(2).sum()), count + y.numel()
    finally:
        hook.remove()
    old = proj.weight[rows].double().t()                               # (dim, values)

    def mse(w):
        return float((yy - 2 * (cross * w).sum() + (w * (gram @ w)).sum()) / count)

    eye = torch.eye(gram.shape[0], dtype=gram.dtype)
    new = torch.linalg.solve(gram + ridge * gram.trace() / gram.shape[0] * eye, cross)
    before, after = mse(old), mse(new)
    if after < before:
        proj.weight[rows] = new.t().to(proj.weight.dtype)
    return {"tokens": count // (rows.stop - rows.start), "mse_before": before, "mse_after": min(before, after)}


def _reconstruct_unfiltered(model, v: torch.Tensor) -> torch.Tensor:
    """(1, 3, H, W) -> the model's reconstruction before any deblocking (through FSQ codes for FSQ models)."""
    tokens = grid_to_tokens(pad_to_patches(v[:, :, None]))
    patches = model.decode_tokens(tokens.replace(_latents(model, tokens))).feats
    grid = (1, 1, v.shape[-2] // PATCH_SIZE[1], v.shape[-1] // PATCH_SIZE[2])
    return tokens_to_grid(patches, grid, PATCH_SIZE, channels=v.shape[1])[:, :, 0]


@torch.no_grad()
def choose_deblock_strength(model, views, strengths=DEBLOCK_STRENGTHS) -> tuple[float, dict]:
    """The ``deblock_strength`` (of ``strengths``) with the least pixel MSE on ``views`` (as in
    :func:`refit_output_projection`), and {strength: MSE}; the model's own setting is not changed."""
    sums, count = dict.fromkeys(strengths, 0.0), 0
    for v in views:
        v = v.to(model.device, model.dtype)
        rec = _reconstruct_unfiltered(model, v).clamp(-1, 1)
        for s in strengths:
            sums[s] += float((smooth_patch_borders(rec, PATCH_SIZE[1:], s) - v).pow(2).mean())
        count += 1
    table = {s: total / max(count, 1) for s, total in sums.items()}
    return min(table, key=table.get), table
