"""The transformer stack both AToken halves are made of: input projection + learned position table, blocks with
4D RoPE inside (sample, tile) groups, final norm."""

from __future__ import annotations

import torch
from torch import nn

from ..layers.attention_layer import AttentionContext
from ..layers.norms import make_norm
from ..layers.position_table import LearnedPositionTable
from ..layers.rope import RotaryTables
from ..layers.transformer_block import TransformerBlock, checkpoint_function, run_blocks
from ..tokens.temporal_tiles import TokenLayout


class TokenTransformer(nn.Module):
    """Args:
    in_channels: token feature size at the input (3072 patch values, or the latent channels).
    dim, depth, heads, mlp_dim: width, number of blocks, attention heads, MLP hidden size.
    norm: ``"layer"`` (LayerNorm, encoder) or ``"rms"`` (RMSNorm, decoder).
    bias: biases in every linear layer of the stack.
    qk_norm: per-head QK-norm before RoPE.
    """

    def __init__(
        self,
        in_channels: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_dim: int,
        norm: str = "layer",
        bias: bool = True,
        qk_norm: bool = False,
        pos_grid: int = 16,
    ):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.proj_in = nn.Linear(in_channels, dim, bias=bias)
        self.pos_table = LearnedPositionTable(dim, pos_grid)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, mlp_dim, norm=norm, bias=bias, qk_norm=qk_norm) for _ in range(depth)
        )
        self.norm_out = make_norm(norm, dim)
        self.gradient_checkpointing = False
        self.use_rope = True  # False turns the stack into a plain ViT (e.g. to compare with the SigLIP2 it came from)

    def hidden_states(self, feats: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        """(N, in_channels) tokens in group order -> (N, dim) normalised hidden states in group order."""
        xy = layout.positions[:, 1:3].long()
        pos = self.pos_table(xy, layout.group, layout.group_sizes, layout.table_size, layout.table_window)
        x = self.proj_in(feats) + pos.to(feats.dtype)
        ctx = AttentionContext(layout.plan)
        if self.use_rope:
            ctx.rope_q = RotaryTables(layout.positions, self.head_dim)
            same = layout.key_positions is layout.positions
            ctx.rope_k = ctx.rope_q if same else RotaryTables(layout.key_positions, self.head_dim)
        return self.norm_out(run_blocks(self.blocks, x, ctx, checkpoint=checkpoint_function(self)))
