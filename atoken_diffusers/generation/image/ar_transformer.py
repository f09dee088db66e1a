"""An autoregressive transformer over AToken's FSQ indices (TokenBridge-style two-level prediction).

An image is h x w latent positions in raster order; each position holds K codebook indices (So/D: 8 x 4096). A
causal *backbone* runs over positions: its input at step j is the class embedding (j = 0) or the sum of the K
codebook embeddings of position j - 1, plus a learned position embedding of position j; its output ``h_j`` therefore
sees the class and all earlier positions. A small causal *head* then predicts the K indices of position j one after
another: step k sees ``h_j`` and the indices 0..k-1 of the same position.

Training is teacher-forced and fully vectorised (:meth:`ATokenARTransformer.forward`); decoding
(:meth:`step_backbone`, :meth:`step_head`) keeps a key/value cache for both levels.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ...layers.attention_layer import AttentionContext
from ...layers.kv_cache import KVCache
from ...layers.norms import RMSNorm32
from ...layers.position_table import LearnedPositionTable
from ...layers.rope import RotaryTables
from ...layers.transformer_block import TransformerBlock, checkpoint_function, run_blocks
from .dit import grid_positions

AR_PRESETS = {
    "tiny": dict(hidden_size=64, num_layers=2, num_heads=2, head_hidden_size=64, head_layers=1, head_heads=2),
    "B": dict(hidden_size=768, num_layers=12, num_heads=12, head_hidden_size=512, head_layers=2, head_heads=8),
    "L": dict(hidden_size=1024, num_layers=24, num_heads=16, head_hidden_size=768, head_layers=3, head_heads=12),
}


def _causal_block(dim: int, heads: int, mlp_ratio: float) -> TransformerBlock:
    """Pre-norm RMSNorm block with QK-norm and causal self-attention."""
    return TransformerBlock(dim, heads, int(dim * mlp_ratio), norm="rms", qk_norm=True, causal=True)


class ATokenARTransformer(ModelMixin, ConfigMixin):
    r"""Class-conditional autoregressive model of FSQ index grids.

    Args:
        num_codebooks: K, indices per latent position (the AToken quantizer's ``fsq_num_codebooks``).
        codebook_size: V, entries per codebook (4096).
        sample_size: side of the latent grid the position table is learned at (16 for 256 x 256 images).
        hidden_size, num_layers, num_heads: the backbone over positions.
        head_hidden_size, head_layers, head_heads: the per-position head over codebooks.
        mlp_ratio: MLP width / model width in both.
        num_classes: classes; label ``num_classes`` means "no class" (classifier-free guidance).
        class_names: optional class names (index = class id).
        class_dropout_prob: how often training dropped the label (recorded for pipelines).
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["TransformerBlock"]

    @register_to_config
    def __init__(
        self,
        num_codebooks: int = 8,
        codebook_size: int = 4096,
        sample_size: int = 16,
        hidden_size: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        head_hidden_size: int = 512,
        head_layers: int = 2,
        head_heads: int = 8,
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        class_names: list | None = None,
        class_dropout_prob: float = 0.1,
    ):
        super().__init__()
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but num_classes is {num_classes}.")
        if num_classes < 1:
            raise ValueError("num_classes must be >= 1 (use 1 for an unconditional model).")
        if (hidden_size // num_heads) % 8:
            raise ValueError(f"hidden_size / num_heads must be a multiple of 8 (rotary embedding); got "
                             f"{hidden_size} / {num_heads}.")
        k, v = num_codebooks, codebook_size
        self.head_dim = hidden_size // num_heads
        # Backbone: sum of the K codebook embeddings of the previous position (one table, offsets k * V).
        self.token_embed = nn.Embedding(k * v, hidden_size)
        self.class_embed = nn.Embedding(num_classes + 1, hidden_size)
        self.pos_table = LearnedPositionTable(hidden_size, grid=sample_size)
        self.blocks = nn.ModuleList(_causal_block(hidden_size, num_heads, mlp_ratio) for _ in range(num_layers))
        self.norm = RMSNorm32(hidden_size)
        # Head: step k input = project(h_j) + step embedding k + embedding of index k - 1 of the same position.
        self.head_in = nn.Linear(hidden_size, head_hidden_size)
        self.head_step = nn.Parameter(torch.zeros(k, head_hidden_size))
        self.head_token_embed = nn.Embedding(k * v, head_hidden_size)
        self.head_blocks = nn.ModuleList(
            _causal_block(head_hidden_size, head_heads, mlp_ratio) for _ in range(head_layers))
        self.head_norm = RMSNorm32(head_hidden_size)
        self.head_out = nn.Parameter(torch.zeros(k, head_hidden_size, v))  # one output projection per codebook
        self.head_bias = nn.Parameter(torch.zeros(k, v))
        for p in (self.token_embed.weight, self.class_embed.weight, self.pos_table.weight, self.head_step,
                  self.head_token_embed.weight):
            nn.init.normal_(p, std=0.02)
        nn.init.normal_(self.head_out, std=head_hidden_size ** -0.5)
        self.register_buffer("offsets", torch.arange(k) * v, persistent=False)
        self.gradient_checkpointing = False

    @property
    def null_class(self) -> int:
        return self.config.num_classes

    # ------------------------------------------------------------------------------------------------ pieces

    def _positions(self, height: int, width: int, start: int, stop: int, device):
        """Learned position vectors and rotary tables of raster positions [start, stop) of an h x w grid."""
        pos = self.pos_table.resized(height, width)[start:stop]
        rope = RotaryTables(grid_positions(height, width, device)[start:stop], self.head_dim)
        return pos, rope

    def _embed_tokens(self, indices: torch.Tensor) -> torch.Tensor:
        """(..., K) indices -> (..., hidden) summed codebook embeddings."""
        return self.token_embed(indices + self.offsets).sum(-2)

    def _head_inputs(self, h: torch.Tensor, indices: torch.Tensor | None) -> torch.Tensor:
        """Teacher-forced head inputs (N, K, head_hidden) from backbone outputs h (N, hidden) and indices (N, K)."""
        x = self.head_in(h)[:, None] + self.head_step
        prev = self.head_token_embed(indices[:, :-1] + self.offsets[:-1])  # index k-1 feeds step k
        return x + torch.cat([torch.zeros_like(prev[:, :1]), prev], dim=1)

    def _head_logits(self, x: torch.Tensor, codebooks: slice) -> torch.Tensor:
        """(N, S, head_hidden) head outputs -> (N, S, V) logits of the codebooks ``codebooks``."""
        w, b = self.head_out[codebooks], self.head_bias[codebooks]
        return torch.einsum("nsd,sdv->nsv", self.head_norm(x), w.to(x.dtype)) + b.to(x.dtype)

    # ------------------------------------------------------------------------------------------------ training

    def forward(self, indices: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits of every index.

        Args:
            indices: (B, K, h, w) int64 FSQ indices in [0, V).
            class_labels: (B,) int64 in [0, num_classes]; ``num_classes`` means no class.
        Returns:
            (B, K, h, w, V) logits; ``logits[b, k, i, j]`` is the distribution of ``indices[b, k, i, j]``.
        """
        b, k, h, w = indices.shape
        if k != self.config.num_codebooks:
            raise ValueError(f"indices has {k} codebooks; this model predicts {self.config.num_codebooks}.")
        seq = indices.flatten(2).transpose(1, 2)  # (B, L, K)
        pos, rope = self._positions(h, w, 0, h * w, indices.device)
        x = torch.cat([self.class_embed(class_labels)[:, None], self._embed_tokens(seq[:, :-1])], dim=1)
        x = x + pos.to(x.dtype)
        ckpt = checkpoint_function(self)
        hid = self.norm(run_blocks(self.blocks, x, AttentionContext(rope_q=rope, rope_k=rope), checkpoint=ckpt))
        head_in = self._head_inputs(hid.flatten(0, 1), seq.flatten(0, 1))  # (B * L, K, head_hidden)
        head = run_blocks(self.head_blocks, head_in, AttentionContext(), checkpoint=ckpt)
        logits = self._head_logits(head, slice(None))  # (B*L, K, V)
        return logits.view(b, h, w, k, -1).permute(0, 3, 1, 2, 4)

    # ------------------------------------------------------------------------------------------------ decoding

    def new_caches(self, batch: int, positions: int) -> tuple[KVCache, KVCache]:
        """Empty key/value caches, for ``batch`` sequences, of the backbone (``positions`` long) and of the head (K
        long)."""
        return KVCache(positions, batch), KVCache(self.config.num_codebooks, batch)

    def step_backbone(self, cache: KVCache, grid: tuple[int, int], class_labels: torch.Tensor | None = None,
                      prev_indices: torch.Tensor | None = None) -> torch.Tensor:
        """Advance the backbone by one position.

        Args:
            cache: the backbone cache; ``cache.length`` is the raster position j being predicted.
            grid: (h, w) of the image being generated.
            class_labels: (B,) labels, used at j = 0.
            prev_indices: (B, K) indices of position j - 1, used at j > 0.
        Returns:
            (B, hidden) backbone output for position j.
        """
        j = cache.length
        x = self.class_embed(class_labels) if j == 0 else self._embed_tokens(prev_indices)
        pos, rope = self._positions(*grid, j, j + 1, x.device)
        x = (x + pos.to(x.dtype))[:, None]
        return self.norm(run_blocks(self.blocks, x, AttentionContext(rope_q=rope, rope_k=rope, cache=cache)))[:, 0]

    def step_head(self, cache: KVCache, h: torch.Tensor, prev_index: torch.Tensor | None = None) -> torch.Tensor:
        """Advance the head by one codebook.

        Args:
            cache: the head cache; ``cache.length`` is the codebook k being predicted (reset it per position).
            h: (B, hidden) backbone output of the position.
            prev_index: (B,) index of codebook k - 1 (None at k = 0).
        Returns:
            (B, V) logits of codebook k.
        """
        k = cache.length
        x = self.head_in(h) + self.head_step[k]
        if k > 0:
            x = x + self.head_token_embed(prev_index + self.offsets[k - 1])
        out = run_blocks(self.head_blocks, x[:, None], AttentionContext(cache=cache))
        return self._head_logits(out, slice(k, k + 1))[:, 0]
