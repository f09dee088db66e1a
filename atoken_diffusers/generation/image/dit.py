"""A class-conditional (optionally text-conditional) diffusion transformer over AToken latents (Lightning-DiT style).

The latent grid (B, C, h, w) -- AToken's 16x-downsampled image latents, normalised per channel -- is read with patch
size 1: every latent cell is one token. Tokens get a learned position table (resized to the grid, so other sizes
work) and 2D rotary embeddings in attention (AToken's 4D RoPE with t = z = 0), QK-norm, and adaLN-zero modulation
from the sum of the timestep, class and (optional) pooled text embeddings. The output is the flow-matching velocity
(noise - data) for :class:`~diffusers.FlowMatchEulerDiscreteScheduler`.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ...layers.attention_layer import AttentionContext
from ...layers.norms import LayerNorm32
from ...layers.position_table import LearnedPositionTable
from ...layers.rope import RotaryTables
from ...layers.transformer_block import TransformerBlock, checkpoint_function, run_blocks

# hidden size, layers, heads of the usual DiT sizes; "tiny" is for tests and CPU smoke runs.
DIT_PRESETS = {
    "tiny": dict(hidden_size=64, num_layers=2, num_heads=2),
    "S": dict(hidden_size=384, num_layers=12, num_heads=6),
    "B": dict(hidden_size=768, num_layers=12, num_heads=12),
    "L": dict(hidden_size=1024, num_layers=24, num_heads=16),
    "XL": dict(hidden_size=1152, num_layers=28, num_heads=16),
}


def grid_positions(height: int, width: int, device=None) -> torch.Tensor:
    """(height * width, 4) rotary positions (t, x, y, z) of a row-major latent grid: x the row, y the column."""
    rows = torch.arange(height, device=device).repeat_interleave(width)
    cols = torch.arange(width, device=device).repeat(height)
    zeros = torch.zeros_like(rows)
    return torch.stack([zeros, rows, cols, zeros], dim=1)


class ATokenDiT(ModelMixin, ConfigMixin):
    r"""Diffusion transformer over AToken latent grids.

    Args:
        in_channels: latent channels (48 for So/C).
        sample_size: side of the latent grid the position table is learned at (16 for 256 x 256 images).
        hidden_size, num_layers, num_heads, mlp_ratio: transformer size (see ``DIT_PRESETS``).
        num_classes: number of classes; label ``num_classes`` is the "no class" label used for classifier-free
            guidance. 0 makes the model unconditional on classes.
        class_names: optional names of the classes (index = class id), for pipelines and the command line.
        text_embed_dim: width of pooled text embeddings (e.g. 1152 for SigLIP2 So400m) to condition on, or None.
            The all-zero embedding is the "no text" condition.
        class_dropout_prob: the probability with which training replaced labels by the "no class" label (recorded
            for pipelines: guidance needs it > 0).
        qk_norm: RMS-style QK normalisation in attention (stabilises training).
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["TransformerBlock"]
    _skip_layerwise_casting_patterns = ["pos_table", "norm", "embed"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 48,
        sample_size: int = 16,
        hidden_size: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        class_names: list | None = None,
        text_embed_dim: int | None = None,
        class_dropout_prob: float = 0.1,
        qk_norm: bool = True,
    ):
        super().__init__()
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but num_classes is {num_classes}.")
        if hidden_size % num_heads or (hidden_size // num_heads) % 8:
            raise ValueError(f"hidden_size / num_heads must be a multiple of 8 (rotary embedding); got "
                             f"{hidden_size} / {num_heads}.")
        self.head_dim = hidden_size // num_heads
        self.proj_in = nn.Linear(in_channels, hidden_size)
        self.pos_table = LearnedPositionTable(hidden_size, grid=sample_size)
        nn.init.normal_(self.pos_table.weight, std=0.02)
        self.time_proj = Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(256, hidden_size)
        self.class_embed = nn.Embedding(num_classes + 1, hidden_size) if num_classes > 0 else None
        if self.class_embed is not None:
            nn.init.normal_(self.class_embed.weight, std=0.02)
        self.text_embed = nn.Linear(text_embed_dim, hidden_size) if text_embed_dim else None
        mlp_dim = int(hidden_size * mlp_ratio)
        # adaLN-zero blocks: every block starts as the identity.
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden_size, num_heads, mlp_dim, qk_norm=qk_norm, modulation=True)
            for _ in range(num_layers))
        self.norm_out = LayerNorm32(hidden_size, eps=1e-6, elementwise_affine=False)
        self.modulation_out = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        self.proj_out = nn.Linear(hidden_size, in_channels)
        for layer in (self.modulation_out[1], self.proj_out):  # the model starts by predicting zero velocity
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.gradient_checkpointing = False

    @property
    def null_class(self) -> int:
        """The label meaning "no class" (unconditional branch of classifier-free guidance)."""
        return self.config.num_classes

    def condition(self, timestep: torch.Tensor, class_labels: torch.Tensor | None,
                  pooled_projections: torch.Tensor | None, batch: int) -> torch.Tensor:
        """(B, hidden) conditioning vector: timestep + class + text embeddings."""
        t = timestep.reshape(-1).expand(batch) if timestep.numel() == 1 else timestep.reshape(batch)
        cond = self.time_embed(self.time_proj(t.float()).to(self.proj_in.weight.dtype))
        if self.class_embed is not None:
            if class_labels is None:
                class_labels = torch.full((batch,), self.null_class, device=cond.device, dtype=torch.long)
            cond = cond + self.class_embed(class_labels.reshape(batch).long())
        if self.text_embed is not None and pooled_projections is not None:
            cond = cond + self.text_embed(pooled_projections.to(cond.dtype))
        return cond

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor | float,
        class_labels: torch.Tensor | None = None,
        pooled_projections: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple:
        """Predict the flow-matching velocity.

        Args:
            hidden_states: (B, in_channels, h, w) noisy normalised latents x_t = (1 - s) x_0 + s * noise.
            timestep: (B,) or scalar, s * 1000 with s in [0, 1] (the scheduler's ``timesteps``).
            class_labels: (B,) int64 in [0, num_classes]; ``num_classes`` (or None) means no class.
            pooled_projections: (B, text_embed_dim) pooled text embeddings (zeros: no text); ignored by models
                without ``text_embed_dim``.
        Returns:
            ``Transformer2DModelOutput(sample)``: (B, in_channels, h, w), the velocity noise - x_0.
        """
        b, c, h, w = hidden_states.shape
        if c != self.config.in_channels:
            raise ValueError(f"hidden_states has {c} channels; this transformer takes {self.config.in_channels}.")
        timestep = torch.as_tensor(timestep, device=hidden_states.device)
        x = self.proj_in(hidden_states.flatten(2).transpose(1, 2))  # (B, h*w, D)
        x = x + self.pos_table.resized(h, w).to(x.dtype)
        cond = self.condition(timestep, class_labels, pooled_projections, b)
        # Dense (B, h * w, D) sequences: the rotary tables of one grid serve every sample.
        rope = RotaryTables(grid_positions(h, w, x.device), self.head_dim)
        ctx = AttentionContext(rope_q=rope, rope_k=rope)
        x = run_blocks(self.blocks, x, ctx, emb=cond, checkpoint=checkpoint_function(self))
        shift, scale = self.modulation_out(cond).chunk(2, dim=-1)
        out = self.proj_out(self.norm_out(x) * (1 + scale[:, None]) + shift[:, None])
        out = out.transpose(1, 2).reshape(b, c, h, w)
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)

