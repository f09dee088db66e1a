"""Stage 1 of image-to-3D: a flow transformer over the sparse-structure latent, conditioned on image tokens.

The (B, C, 16, 16, 16) latent of :class:`SparseStructureVAE` (normalised per channel) is cut into ``patch_size``^3
patches (2 -> 512 tokens of 8 C values), embedded (plus absolute sin/cos positions), and run through adaLN-zero
transformer blocks with 3D RoPE over the patch grid and cross-attention to the image's AToken encoder features; the
output is the flow-matching velocity (noise - x_0) for :class:`~diffusers.FlowMatchEulerDiscreteScheduler`.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ...layers.sincos import sincos_position_embedding
from ...tokens.patchify import grid_to_tokens, tokens_to_grid
from .flow_blocks import FlowTrunk, check_condition, flow_context

# hidden size, layers, heads (and patch); "tiny" (2 wide layers over 64 tokens) is what fits quickly on a CPU, for
# tests and smoke runs.
FLOW_PRESETS = {
    "tiny": dict(hidden_size=256, num_layers=2, num_heads=4, patch_size=4),
    "S": dict(hidden_size=384, num_layers=12, num_heads=6),
    "B": dict(hidden_size=768, num_layers=12, num_heads=12),
    "L": dict(hidden_size=1024, num_layers=24, num_heads=16),
}


class SparseStructureFlowTransformer(ModelMixin, ConfigMixin):
    r"""Image-conditioned flow transformer over dense 3D structure latents.

    Args:
        in_channels: latent channels (8).
        sample_size: latent side (16).
        patch_size: latent cells per token along each axis (2 -> (16/2)^3 = 512 tokens).
        cond_dim: width of the condition tokens (AToken's ``encoder_dim``: 1152 for So/C).
        hidden_size, num_layers, num_heads, mlp_ratio: transformer size (see ``FLOW_PRESETS``).
        cond_dropout_prob: probability with which training replaced the condition by zeros (recorded for pipelines:
            classifier-free guidance needs it > 0).
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["TransformerBlock"]
    _skip_layerwise_casting_patterns = ["norm", "embed"]

    @register_to_config
    def __init__(self, in_channels: int = 8, sample_size: int = 16, patch_size: int = 2, cond_dim: int = 1152,
                 hidden_size: int = 768, num_layers: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 cond_dropout_prob: float = 0.1):
        super().__init__()
        if sample_size % patch_size:
            raise ValueError(f"sample_size ({sample_size}) must be divisible by patch_size ({patch_size}).")
        token_dim = in_channels * patch_size**3
        self.proj_in = nn.Linear(token_dim, hidden_size)
        self.trunk = FlowTrunk(hidden_size, num_layers, num_heads, cond_dim, token_dim, mlp_ratio)

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor | float,
                encoder_hidden_states: torch.Tensor, return_dict: bool = True):
        """Predict the velocity.

        Args:
            hidden_states: (B, in_channels, R, R, R) noisy normalised latents (1 - s) x_0 + s noise.
            timestep: (B,) or scalar, 1000 s.
            encoder_hidden_states: (B, L, cond_dim) image-condition tokens (zeros: no condition).
        Returns:
            ``Transformer2DModelOutput(sample)`` of the input's shape.
        """
        cfg = self.config
        r = cfg.sample_size
        if hidden_states.ndim != 5 or hidden_states.shape[1:] != (cfg.in_channels, r, r, r):
            raise ValueError(f"hidden_states must be (B, {cfg.in_channels}, {cfg.sample_size}, {cfg.sample_size}, "
                             f"{cfg.sample_size}); got {tuple(hidden_states.shape)}.")
        b, c = hidden_states.shape[:2]
        check_condition(encoder_hidden_states, b, cfg.cond_dim)
        timestep = torch.as_tensor(timestep, device=hidden_states.device).reshape(-1).expand(b)
        p = cfg.patch_size
        tokens = grid_to_tokens(hidden_states.to(self.proj_in.weight.dtype), (p, p, p)).feats.view(b, -1, c * p**3)
        n = tokens.shape[1]
        batch = torch.arange(b, device=tokens.device).repeat_interleave(n)
        axis = torch.arange(r // cfg.patch_size, device=tokens.device)
        grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1).reshape(-1, 3)
        ctx = flow_context(grid.repeat(b, 1), batch, b, encoder_hidden_states.shape[1], self.trunk.head_dim,
                           r // p)
        x = self.proj_in(tokens) + sincos_position_embedding(grid, cfg.hidden_size).to(tokens.dtype)
        out = self.trunk(x.flatten(0, 1), timestep, encoder_hidden_states, [ctx])
        out = tokens_to_grid(out.reshape(b * n, -1), (b, r // p, r // p, r // p), (p, p, p), channels=c)
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)
