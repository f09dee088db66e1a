"""A decoder that starts as a *linear codec with context*: each patch is decoded from its own PCA coefficients and
those of its 8 neighbours (least squares on training photographs), built from AToken's own decoder blocks.

Per-patch PCA leaves a visible 16-px grid (its border steps are about twice the inside steps) because a patch is
decoded alone. Least squares from the 3 x 3 neighbourhood of coefficients lowers the held-out grid ratio to about 1.4
and adds ~0.45 dB; here it is written into the decoder exactly:

- each of 8 attention heads (blocks 0-2, 3 heads each) attends, through RoPE alone, to one neighbour offset: its
  queries and keys are constants (read from the constant hidden channels), with phases chosen so that the logit peaks
  at that relative position, falls back to the token itself where the neighbour is missing (image borders), and stays
  in the same latent frame (video) and depth (voxels); its values are the neighbour's coefficients;
- ``to_out`` maps them into ``rank`` correction channels, the output projection maps those to pixels;
- everything else (MLPs, blocks 3-5) starts at zero and is free to learn.

Decoder hidden layout: ``[ coefficients (k) | corrections (rank) | alternating +C / -C (rest) ]``.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from ..layers.rope import rope_frequencies
from .pca_init import PATCH_VALUES, alternating

NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]  # (row, column) offsets


def neighbourhood(coefficients: torch.Tensor, head_dim: int, **pattern) -> torch.Tensor:
    """(h, w, k) coefficients of one image -> (h * w, 9 k): own, then what each of the 8 context heads gathers (the
    softmax of its logits over the image's tokens: the neighbour inside the image, its fallback at the borders),
    exactly as the decoder's heads compute it."""
    h, w, k = coefficients.shape
    own = coefficients.reshape(h * w, k)
    span = max(h, w)
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    rel_r = (rows.reshape(1, -1) - rows.reshape(-1, 1)) + span   # [query, key] key - query offsets
    rel_c = (cols.reshape(1, -1) - cols.reshape(-1, 1)) + span
    parts = [own]
    for offset in NEIGHBOURS:
        table = head_logits(head_dim, offset, span=span, **pattern)
        parts.append(torch.softmax(table[rel_r, rel_c], dim=1) @ own)
    return torch.cat(parts, 1)


@torch.no_grad()
def fit_context_decoder(codec, views, head_dim: int, rank: int = 64, ridge: float = 1e-5, **pattern) -> dict:
    """Least-squares decoder from 3 x 3 neighbourhoods of ``codec`` coefficients to patches.

    Args:
        codec: a :class:`~atoken_diffusers.weights.baseline.PCACodec` (the encoder).
        views: iterable of (1, 3, H, W) training images in [-1, 1], H and W multiples of 16.
        head_dim: the decoder's attention head size (the RoPE frequencies the heads select positions with).
        rank: correction channels (the neighbours' contribution is reduced to this rank).
        pattern: the heads' ``fallback``, ``same`` and ``sharpness`` (as given to :func:`init_context_decoder`).
    Returns:
        {"own": (768, k), "bias": (768,), "basis": (768, rank), "mix": (8, rank, k)}.
    """
    from ..weights.baseline import to_patches

    xs, ys = [], []
    for v in views:
        patches = to_patches(v)
        grid = codec.encode(patches).reshape(v.shape[-2] // 16, v.shape[-1] // 16, -1)
        xs.append(neighbourhood(grid, head_dim, **pattern))
        ys.append(patches)
    x, y = torch.cat(xs).double(), torch.cat(ys).double()
    k = x.shape[1] // 9
    xb = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    gram = xb.t() @ xb + ridge * len(x) * torch.eye(xb.shape[1], dtype=x.dtype)
    m = torch.linalg.solve(gram, xb.t() @ y)                            # (9k + 1, 768)
    neighbour = m[k:9 * k]
    fitted = x[:, k:] @ neighbour
    _, _, vh = torch.linalg.svd(fitted - fitted.mean(0), full_matrices=False)
    basis = vh[:rank].t()                                               # (768, rank) orthonormal
    mix = (neighbour @ basis).t().reshape(rank, 8, k).transpose(0, 1)   # (8, rank, k)
    return {"own": m[:k].t().float().contiguous(), "bias": m[-1].float().contiguous(),
            "basis": basis.float().contiguous(), "mix": mix.float().contiguous()}


def _head_pattern(head_dim: int, offset: tuple[int, int], fallback: float, same: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(query, key) head vectors whose rotated dot product peaks at ``offset`` (row, column), with a smaller peak
    (``fallback``) at the token itself and a factor ``same`` on staying in the same frame/depth."""
    n = head_dim // 8
    f = rope_frequencies(head_dim)
    q = torch.zeros(4, n, dtype=torch.complex64)                        # axes t, x (row), y (column), z
    q[0] = same
    q[3] = same
    for axis, d in ((1, offset[0]), (2, offset[1])):
        q[axis] = torch.exp(1j * f * d) + fallback                     # logit term Re(q e^{i f (pos_q - pos_k)})
    key = torch.ones(4 * n, dtype=torch.complex64)
    as_real = lambda z: torch.view_as_real(z.reshape(-1)).reshape(-1)  # noqa: E731  pairs (2m, 2m + 1)
    return as_real(q), as_real(key)


@torch.no_grad()
def init_context_decoder(model, fit: dict, scale: float, constant: float = 40.0, fallback: float = 0.4,
                         same: float = 1.0, sharpness: float = 6.0) -> None:
    """Write the context decoder ``fit`` (:func:`fit_context_decoder`) into ``model.decoder``; latents are
    ``scale`` * PCA coefficients (the encoder from :func:`~atoken_diffusers.training.pca_init.init_from_pca`)."""
    dec = model.decoder
    d, k = dec.proj_in.out_features, model.config.latent_channels
    rank = fit["basis"].shape[1]
    heads, head_dim = dec.heads, dec.head_dim
    blocks_needed = math.ceil(len(NEIGHBOURS) / heads)
    if d - k - rank < 2 or head_dim < k or blocks_needed > len(dec.blocks) or fit["own"].shape != (PATCH_VALUES, k):
        raise ValueError(f"the context decoder needs width > latent + rank + 1 ({k + rank + 1}), head_dim >= latent "
                         f"channels ({k}) and {blocks_needed} blocks; got width {d}, head_dim {head_dim}, "
                         f"{len(dec.blocks)} blocks, fit for {fit['own'].shape[1]} channels.")
    const = torch.zeros(d)
    const[k + rank:] = alternating(d - k - rank, constant)
    n_const = d - k - rank
    rms = constant * math.sqrt(n_const / d)
    signs = torch.sign(const)

    for block in dec.blocks:  # start from identity blocks
        block.attn.to_out.weight.zero_()
        block.mlp.fc2.weight.zero_()
        block.norm1.weight.fill_(1.0)
        block.norm2.weight.fill_(1.0)
    dec.proj_in.weight.zero_()
    dec.proj_in.weight[:k] = torch.eye(k) / scale
    dec.pos_table.weight.copy_(const.expand_as(dec.pos_table.weight))
    read_const = signs / (n_const * constant / rms)  # a row that reads 1 from the constant channels
    for h, offset in enumerate(NEIGHBOURS):
        block, j = dec.blocks[h // heads], h % heads
        q, key = _head_pattern(head_dim, offset, fallback, same)
        rows = slice(j * head_dim, (j + 1) * head_dim)
        w = block.attn.to_qkv.weight.view(3, heads * head_dim, d)
        w[0, rows] = q[:, None] * read_const[None]
        w[1, rows] = key[:, None] * read_const[None]
        w[2, rows] = 0
        w[2, j * head_dim: j * head_dim + k, :k] = torch.eye(k) * rms  # values: the neighbour's coefficients
        block.attn.q_norm.gamma[j] = sharpness
        block.attn.k_norm.gamma[j] = sharpness
        block.attn.to_out.weight[k:k + rank, j * head_dim: j * head_dim + k] = fit["mix"][h]
    out = torch.zeros(PATCH_VALUES, d)
    out[:, :k] = fit["own"] * rms
    out[:, k:k + rank] = fit["basis"] * rms
    out += fit["bias"][:, None] * read_const[None]
    dec.norm_out.weight.fill_(1.0)
    dec.proj_out.weight.copy_(out.repeat(dec.proj_out.out_features // PATCH_VALUES, 1))


@functools.lru_cache(maxsize=64)  # the least-squares fit asks for the same tables once per view
def head_logits(head_dim: int, offset, fallback: float = 0.4, same: float = 1.0, sharpness: float = 6.0,
                span: int = 8) -> torch.Tensor:
    """Softmax logits of one context head over relative key positions (row, column) in [-span, span]^2 (for
    checking its selectivity): (2 span + 1, 2 span + 1). Cached: treat the result as read-only."""
    from ..layers.rope import RotaryTables

    q, key = _head_pattern(head_dim, offset, fallback, same)
    q = F.normalize(q, dim=0) * sharpness * math.sqrt(head_dim)
    key = F.normalize(key, dim=0) * sharpness * math.sqrt(head_dim)
    r = torch.arange(-span, span + 1)
    grid = torch.stack(torch.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2)
    pos_k = torch.cat([torch.zeros(len(grid), 1), grid.float(), torch.zeros(len(grid), 1)], 1)
    qr = RotaryTables(torch.zeros(1, 4), head_dim).rotate(q[None, None])[0, 0]
    kr = RotaryTables(pos_k, head_dim).rotate(key[None, None].expand(len(grid), 1, -1))[:, 0]
    return (kr @ qr / math.sqrt(head_dim)).reshape(2 * span + 1, 2 * span + 1)
