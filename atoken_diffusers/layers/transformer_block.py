"""The project's one transformer block, and the loop that runs a stack of them.

Pre-norm: x + Attn(norm1 x); optionally x + CrossAttn(norm_cross x, context); x + MLP(norm2 x). Flavours, by flag:

* tokenizer encoder: LayerNorm, biases; decoder: RMSNorm, no biases, QK-norm (4D RoPE from the context);
* Gaussian decoder: RMSNorm, no biases, logit soft-cap, shifted-window groups;
* autoregressive model: RMSNorm, QK-norm, causal, dense sequences with a key/value cache;
* DiT and image-to-3D flows: adaLN-zero ``modulation`` (norms without affine parameters; shift, scale and gate of
  both paths from a per-sample embedding, zero-initialised so every block starts as the identity); the flows add
  cross-attention to image-condition tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from .attention_layer import Attention, AttentionContext
from .mlp import FeedForward
from .norms import make_norm


class TransformerBlock(nn.Module):
    """Args:
    dim, heads, mlp_dim: width, attention heads, MLP hidden size.
    norm: ``"layer"`` (LayerNorm) or ``"rms"`` (RMSNorm), eps 1e-6.
    bias: biases in every linear layer of the block.
    qk_norm, causal, softcap: flags of the self-attention (and qk_norm of the cross-attention), see
        :class:`~atoken_diffusers.layers.attention_layer.Attention`.
    context_dim: add cross-attention to context tokens of this width (``None``: none).
    modulation: adaLN-zero conditioning on a (B, dim) embedding passed to :meth:`forward`.
    """

    def __init__(self, dim: int, heads: int, mlp_dim: int, norm: str = "layer", bias: bool = True,
                 qk_norm: bool = False, causal: bool = False, softcap: float | None = None,
                 context_dim: int | None = None, modulation: bool = False):
        super().__init__()
        self.norm1 = make_norm(norm, dim, affine=not modulation)
        self.attn = Attention(dim, heads, bias=bias, qk_norm=qk_norm, causal=causal, softcap=softcap)
        self.norm_cross = self.cross = None
        if context_dim is not None:
            self.norm_cross = make_norm(norm, dim)
            self.cross = Attention(dim, heads, context_dim=context_dim, bias=bias, qk_norm=qk_norm)
        self.norm2 = make_norm(norm, dim, affine=not modulation)
        self.mlp = FeedForward(dim, mlp_dim, bias=bias)
        self.modulation = None
        if modulation:
            self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
            nn.init.zeros_(self.modulation[1].weight)
            nn.init.zeros_(self.modulation[1].bias)

    def forward(self, x: torch.Tensor, ctx: AttentionContext, emb: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, dim) packed or (B, S, dim) dense tokens (as ``ctx`` says); emb: (B, dim) per-sample embedding
        (modulated blocks); context: cross-attention tokens (see ``Attention.forward``). Returns x's shape."""
        if self.modulation is None:
            x = x + self.attn(self.norm1(x), ctx)
            if self.cross is not None:
                x = x + self.cross(self.norm_cross(x), ctx, context)
            return x + self.mlp(self.norm2(x))
        if emb is None:
            raise ValueError("a modulated (adaLN) block needs emb, the (B, dim) conditioning embedding.")
        shift1, scale1, gate1, shift2, scale2, gate2 = ctx.per_token(self.modulation(emb)).chunk(6, dim=-1)
        x = x + gate1 * self.attn(self.norm1(x) * (1 + scale1) + shift1, ctx)
        if self.cross is not None:
            x = x + self.cross(self.norm_cross(x), ctx, context)
        return x + gate2 * self.mlp(self.norm2(x) * (1 + scale2) + shift2)


def checkpoint_function(model: nn.Module) -> Callable | None:
    """The gradient-checkpointing function diffusers' ``enable_gradient_checkpointing`` installed on ``model``, or
    ``None`` when checkpointing is off or gradients are not being recorded."""
    if getattr(model, "gradient_checkpointing", False) and torch.is_grad_enabled():
        return model._gradient_checkpointing_func
    return None


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, ctx: AttentionContext | Sequence[AttentionContext],
               emb: torch.Tensor | None = None, context: torch.Tensor | None = None,
               checkpoint: Callable | None = None) -> torch.Tensor:
    """Run ``blocks`` in turn over x (shapes as :meth:`TransformerBlock.forward`).

    Args:
        ctx: one context for every block, or a sequence cycled over the blocks (e.g. unshifted / shifted windows on
            even / odd blocks).
        checkpoint: gradient-checkpointing function (see :func:`checkpoint_function`), or None.
    """
    contexts = [ctx] if isinstance(ctx, AttentionContext) else list(ctx)
    for i, block in enumerate(blocks):
        args = (x, contexts[i % len(contexts)], emb, context)
        x = block(*args) if checkpoint is None else checkpoint(block, *args)
    return x
