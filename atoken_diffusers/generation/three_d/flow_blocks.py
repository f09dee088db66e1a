"""The trunk of the image-conditioned flow transformers of image-to-3D (TRELLIS style), over packed tokens.

Tokens of several samples are packed into one (N, D) tensor, sample after sample, with their sample index
``batch`` (N,). Every block is the project's :class:`~atoken_diffusers.layers.transformer_block.TransformerBlock`
with adaLN-zero modulation from the timestep: self-attention (within a sample, or within its shifted 3D windows),
cross-attention from the tokens to their sample's image-condition tokens, MLP. Attention runs through
:func:`~atoken_diffusers.layers.attention.varlen_attention` with :class:`AttentionPlan` groups (flash-attn varlen on
CUDA when installed), with 4D RoPE on (0, x, y, z) positions and QK-norm; the models also add an absolute sin/cos
embedding of the positions to their input tokens
(:func:`~atoken_diffusers.layers.sincos.sincos_position_embedding`).
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from ...layers.attention import AttentionPlan
from ...layers.attention_layer import AttentionContext
from ...layers.norms import LayerNorm32
from ...layers.rope import RotaryTables
from ...layers.transformer_block import TransformerBlock, checkpoint_function, run_blocks
from ...layers.windows import window_partition


def flow_context(positions: torch.Tensor, batch: torch.Tensor, num_samples: int, cond_len: int, head_dim: int,
                 resolution: int, window: int | None = None, shift: int = 0) -> AttentionContext:
    """Attention context of tokens at integer 3D ``positions`` (N, 3) in [0, resolution), sorted by ``batch`` (N,).

    With ``window``, self-attention runs inside cubes of ``window``^3 positions shifted by ``shift``; otherwise over
    whole samples. Cross-attention: every token against its sample's ``cond_len`` condition tokens.
    """
    counts = torch.bincount(batch, minlength=num_samples)
    order = inverse = None
    if window:
        order, inverse, plan = window_partition(batch, positions, window, shift, resolution)
        sorted_pos = positions[order]
    else:
        plan = AttentionPlan(counts[counts > 0])
        sorted_pos = positions
    rope = RotaryTables(torch.cat([torch.zeros_like(sorted_pos[:, :1]), sorted_pos], dim=1), head_dim)
    cross = AttentionPlan(counts, torch.full_like(counts, cond_len))
    return AttentionContext(plan, rope_q=rope, rope_k=rope, order=order, inverse=inverse, cross_plan=cross,
                            batch=batch)


class FlowTrunk(nn.Module):
    """Timestep and condition embeddings, ``depth`` adaLN-zero blocks with cross-attention to the condition, and the
    adaLN output head (zero-initialised, so the model starts by predicting zero velocity)."""

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
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, int(dim * mlp_ratio), qk_norm=True, context_dim=dim, modulation=True)
            for _ in range(depth))
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

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, cond: torch.Tensor,
                contexts: list[AttentionContext]) -> torch.Tensor:
        """x (N, D) embedded tokens; timestep (B,); cond (B, L, cond_dim); contexts from :func:`flow_context`, cycled
        over the blocks (unshifted / shifted windows)."""
        temb = self.time_embed(self.time_proj(timestep.float()).to(x.dtype))
        c = self.embed_condition(cond).to(x.dtype)
        x = run_blocks(self.blocks, x, contexts, emb=temb, context=c, checkpoint=checkpoint_function(self))
        shift, scale = contexts[0].per_token(self.modulation_out(temb)).chunk(2, dim=-1)
        return self.proj_out(self.norm_out(x) * (1 + scale) + shift)


def check_condition(cond: torch.Tensor, batch: int, cond_dim: int, name: str = "encoder_hidden_states") -> None:
    if cond.ndim != 3 or cond.shape[0] != batch or cond.shape[2] != cond_dim:
        raise ValueError(f"{name} must be (B={batch}, L, {cond_dim}) image-condition tokens; got {tuple(cond.shape)}.")
