"""Building blocks of the image-conditioned flow transformers of image-to-3D (TRELLIS style), over packed tokens.

Tokens of several samples are packed into one (N, D) tensor, sample after sample, with their sample index
``batch`` (N,). Every block: adaLN-zero self-attention (within a sample, or within its 3D windows), cross-attention
from the tokens to their sample's image-condition tokens, adaLN-zero MLP. Attention runs through
:func:`~atoken_diffusers.layers.attention.varlen_attention` with :class:`AttentionPlan` groups (flash-attn varlen on
CUDA when installed), with 4D RoPE on (0, x, y, z) positions and QK-norm; the models also add an absolute sin/cos
embedding of the positions to their input tokens (:func:`sincos_3d`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from ...layers.attention import AttentionPlan, varlen_attention
from ...layers.mlp import FeedForward
from ...layers.norms import LayerNorm32, QKNorm
from ...layers.rope import RotaryTables
from ...layers.transformer_block import AttentionContext, SelfAttention


@dataclass(eq=False)
class TokenLayout:
    """How one forward pass groups its packed tokens.

    Attributes:
        batch: (N,) sample index of every token (tokens sorted by it).
        self_ctx: the self-attention context over ``order``-permuted tokens (groups: samples or windows).
        order, inverse: permutation of the tokens into self-attention groups and back (None: identity).
        cross_plan: queries (tokens, per sample) against keys (the sample's condition tokens).
    """

    batch: torch.Tensor
    self_ctx: AttentionContext
    order: torch.Tensor | None
    inverse: torch.Tensor | None
    cross_plan: AttentionPlan


def sincos_3d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """(N, 3) integer positions -> (N, dim) float32 absolute embedding: per axis [sin(p w_k), cos(p w_k)] with
    w_k = 10000^(-k/f), f = dim // 6, zero-padded to ``dim``."""
    f = dim // 6
    freqs = 1.0 / 10000 ** (torch.arange(f, device=positions.device, dtype=torch.float32) / max(f, 1))
    angles = positions.float()[..., None] * freqs  # (N, 3, f)
    emb = torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(1)
    return torch.nn.functional.pad(emb, (0, dim - emb.shape[1]))


def make_layout(positions: torch.Tensor, batch: torch.Tensor, num_samples: int, cond_len: int, head_dim: int,
                window: int | None = None, shift: int = 0) -> TokenLayout:
    """Layout of tokens at integer 3D ``positions`` (N, 3), sorted by ``batch`` (N,). With ``window``, self-attention
    runs inside cubes of ``window``^3 positions shifted by ``shift``; otherwise over whole samples."""
    counts = torch.bincount(batch, minlength=num_samples)
    order = inverse = None
    if window:
        cell = (positions + shift) // window
        side = int(cell.max()) + 1 if cell.numel() else 1
        key = ((batch * side + cell[:, 0]) * side + cell[:, 1]) * side + cell[:, 2]
        order = torch.argsort(key, stable=True)
        inverse = torch.argsort(order)
        plan = AttentionPlan(torch.unique_consecutive(key[order], return_counts=True)[1])
        sorted_pos = positions[order]
    else:
        plan = AttentionPlan(counts[counts > 0])
        sorted_pos = positions
    rope = RotaryTables(torch.cat([torch.zeros_like(sorted_pos[:, :1]), sorted_pos], dim=1), head_dim)
    cross = AttentionPlan(counts, torch.full_like(counts, cond_len))
    return TokenLayout(batch, AttentionContext(plan, rope_q=rope, rope_k=rope), order, inverse, cross)


class CrossAttention(nn.Module):
    """Queries from the tokens, keys/values from their sample's condition tokens (QK-norm, no RoPE)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim, 2 * dim)
        self.q_norm = QKNorm(heads, self.head_dim)
        self.k_norm = QKNorm(heads, self.head_dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, plan: AttentionPlan) -> torch.Tensor:
        """x (N, D) sorted by sample; cond (B * L, D) sample after sample."""
        q = self.q_norm(self.to_q(x).unflatten(-1, (self.heads, self.head_dim)))
        k, v = self.to_kv(cond).unflatten(-1, (2, self.heads, self.head_dim)).unbind(1)
        out = varlen_attention(q, self.k_norm(k), v, plan)
        return self.to_out(out.flatten(1))


class FlowBlock(nn.Module):
    """x + g1 * SelfAttn(mod(norm1 x)); x + CrossAttn(norm2 x, cond); x + g2 * MLP(mod(norm3 x)). The modulation
    starts at zero, so each block starts as the identity on its self-attention and MLP paths."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = LayerNorm32(dim, eps=1e-6, elementwise_affine=False)
        self.attn = SelfAttention(dim, heads, bias=True, qk_norm=True)
        self.norm2 = LayerNorm32(dim, eps=1e-6)
        self.cross = CrossAttention(dim, heads)
        self.norm3 = LayerNorm32(dim, eps=1e-6, elementwise_affine=False)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(self, x: torch.Tensor, temb: torch.Tensor, cond: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        """x (N, D) packed tokens; temb (B, D) per-sample timestep embedding; cond (B * L, D)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(temb)[layout.batch].chunk(6, dim=-1)
        h = self.norm1(x) * (1 + scale1) + shift1
        if layout.order is not None:
            h = self.attn(h[layout.order], layout.self_ctx)[layout.inverse]
        else:
            h = self.attn(h, layout.self_ctx)
        x = x + gate1 * h
        x = x + self.cross(self.norm2(x), cond, layout.cross_plan)
        return x + gate2 * self.mlp(self.norm3(x) * (1 + scale2) + shift2)


class FlowTrunk(nn.Module):
    """Timestep and condition embeddings, ``depth`` :class:`FlowBlock` s and the adaLN output head (zero-initialised,
    so the model starts by predicting zero velocity)."""

    def __init__(self, dim: int, depth: int, heads: int, cond_dim: int, out_dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        if dim % heads or (dim // heads) % 8:
            raise ValueError(f"hidden_size / num_heads must be a multiple of 8 (rotary embedding); got {dim} / "
                             f"{heads}.")
        self.head_dim = dim // heads
        self.time_proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(256, dim)
        self.cond_norm = LayerNorm32(cond_dim, eps=1e-6)
        self.cond_proj = nn.Linear(cond_dim, dim)
        self.blocks = nn.ModuleList(FlowBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm_out = LayerNorm32(dim, eps=1e-6, elementwise_affine=False)
        self.modulation_out = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.proj_out = nn.Linear(dim, out_dim)
        for layer in (self.modulation_out[1], self.proj_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.gradient_checkpointing = False  # ModelMixin.enable_gradient_checkpointing sets it (and the function)

    def embed_condition(self, cond: torch.Tensor) -> torch.Tensor:
        """(B, L, cond_dim) image tokens -> (B * L, D). All-zero condition tokens (the "no image" condition of
        classifier-free guidance) stay zero."""
        zero = (cond == 0).all(-1, keepdim=True)
        out = self.cond_proj(self.cond_norm(cond.to(self.cond_proj.weight.dtype)))
        return out.masked_fill(zero, 0).flatten(0, 1)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, cond: torch.Tensor, layouts: list[TokenLayout]):
        """x (N, D) embedded tokens; timestep (B,); cond (B, L, cond_dim); one layout per block (cycled)."""
        temb = self.time_embed(self.time_proj(timestep.float()).to(x.dtype))
        c = self.embed_condition(cond).to(x.dtype)
        for i, block in enumerate(self.blocks):
            layout = layouts[i % len(layouts)]
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x = self._gradient_checkpointing_func(block, x, temb, c, layout)
            else:
                x = block(x, temb, c, layout)
        shift, scale = self.modulation_out(temb)[layouts[0].batch].chunk(2, dim=-1)
        return self.proj_out(self.norm_out(x) * (1 + scale) + shift)


def check_condition(cond: torch.Tensor, batch: int, cond_dim: int, name: str = "encoder_hidden_states") -> None:
    if cond.ndim != 3 or cond.shape[0] != batch or cond.shape[2] != cond_dim:
        raise ValueError(f"{name} must be (B={batch}, L, {cond_dim}) image-condition tokens; got {tuple(cond.shape)}.")
