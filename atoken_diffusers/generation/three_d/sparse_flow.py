"""Stage 2 of image-to-3D: a sparse flow transformer generating AToken latents on the occupied voxels.

Input: the noisy normalised AToken latents (N, C) of the occupied voxels of a packed batch, their coordinates
(N, 4) = (batch, x, y, z) in a 64^3 grid, the timestep and the image-condition tokens. Voxels are grouped into
``patch_size``^3 cells (2 -> a 32^3 grid of tokens; a token holds its up to 8 child voxels' latents and occupancy
flags, plus an absolute sin/cos embedding of its position), tokens attend within shifted 3D windows of
``window_size`` tokens (None: within the whole sample) through varlen-packed attention, and cross-attend to their
sample's condition tokens. The output is the velocity per voxel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from ...layers.sincos import sincos_position_embedding
from ...utils.validation import check_finite, check_voxel_coords
from .flow_blocks import FlowTrunk, check_condition, flow_context

SPARSE_FLOW_PRESETS = {
    "tiny": dict(hidden_size=64, num_layers=2, num_heads=2, window_size=8),
    "S": dict(hidden_size=384, num_layers=12, num_heads=6, window_size=8),
    "B": dict(hidden_size=768, num_layers=12, num_heads=12, window_size=8),
    "L": dict(hidden_size=1024, num_layers=24, num_heads=16, window_size=8),
}


@dataclass
class SparseFlowOutput(BaseOutput):
    """``sample``: (N, in_channels) velocity per voxel, input row order."""

    sample: torch.Tensor


class SparseLatentFlowTransformer(ModelMixin, ConfigMixin):
    r"""Image-conditioned flow transformer over sparse voxel latents.

    Args:
        in_channels: AToken latent channels (48 for So/C).
        resolution: voxel grid side (64).
        patch_size: voxels per token along each axis (1 or 2).
        cond_dim: width of the condition tokens (AToken's ``encoder_dim``).
        hidden_size, num_layers, num_heads, mlp_ratio: transformer size (see ``SPARSE_FLOW_PRESETS``).
        window_size: side of the self-attention windows in tokens, shifted by half on odd blocks; None attends
            over the whole sample.
        cond_dropout_prob: probability with which training replaced the condition by zeros.
        latents_mean, latents_std: per-channel statistics of the training voxels' AToken latents; the model works in
            ``(z - mean) / std``.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["TransformerBlock"]
    _skip_layerwise_casting_patterns = ["norm", "embed"]

    @register_to_config
    def __init__(self, in_channels: int = 48, resolution: int = 64, patch_size: int = 2, cond_dim: int = 1152,
                 hidden_size: int = 768, num_layers: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 window_size: int | None = 8, cond_dropout_prob: float = 0.1, latents_mean: list | None = None,
                 latents_std: list | None = None):
        super().__init__()
        if resolution % patch_size:
            raise ValueError(f"resolution ({resolution}) must be divisible by patch_size ({patch_size}).")
        slots = patch_size**3
        self.proj_in = nn.Linear(slots * (in_channels + 1), hidden_size)
        self.trunk = FlowTrunk(hidden_size, num_layers, num_heads, cond_dim, slots * in_channels, mlp_ratio)

    def latent_stats(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        mean, std = self.config.latents_mean, self.config.latents_std
        if mean is None or std is None:
            return None
        return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)

    def group(self, coords: torch.Tensor):
        """Tokens of the voxels: (token index (N,), slot in the token (N,), token coordinates (P, 4))."""
        p = self.config.patch_size
        g = self.config.resolution // p
        parent = coords[:, 1:] // p
        key = ((coords[:, 0] * g + parent[:, 0]) * g + parent[:, 1]) * g + parent[:, 2]
        uniq, token = torch.unique(key, return_inverse=True)  # sorted: sample-major, as attention needs
        rem = coords[:, 1:] % p
        slot = (rem[:, 0] * p + rem[:, 1]) * p + rem[:, 2]
        token_coords = torch.stack([uniq // g**3, uniq // g**2 % g, uniq // g % g, uniq % g], dim=1)
        return token, slot, token_coords

    def forward(self, hidden_states: torch.Tensor, coords: torch.Tensor, timestep: torch.Tensor | float,
                encoder_hidden_states: torch.Tensor, return_dict: bool = True):
        """Predict the velocity of every voxel.

        Args:
            hidden_states: (N, in_channels) noisy normalised latents of the occupied voxels.
            coords: (N, 4) integer (batch, x, y, z); rows in any order, samples in [0, B).
            timestep: (B,) or scalar, 1000 s.
            encoder_hidden_states: (B, L, cond_dim) image-condition tokens (zeros: no condition).
        Returns:
            :class:`SparseFlowOutput` with (N, in_channels), input row order.
        """
        cfg = self.config
        n = hidden_states.shape[0]
        if hidden_states.ndim != 2 or hidden_states.shape[1] != cfg.in_channels:
            raise ValueError(f"hidden_states must be (N, {cfg.in_channels}) voxel latents; got "
                             f"{tuple(hidden_states.shape)}.")
        b = encoder_hidden_states.shape[0]
        check_condition(encoder_hidden_states, b, cfg.cond_dim)
        check_voxel_coords(coords, cfg.resolution, rows=n, rows_of="hidden_states", batch=b)
        check_finite(hidden_states, "hidden_states")
        coords = coords.long()
        timestep = torch.as_tensor(timestep, device=hidden_states.device).reshape(-1).expand(b)
        token, slot, token_coords = self.group(coords)
        slots, c = cfg.patch_size**3, cfg.in_channels
        dtype = self.proj_in.weight.dtype
        packed = hidden_states.new_zeros(token_coords.shape[0], slots, c + 1, dtype=dtype)
        packed[token, slot] = torch.cat([hidden_states.to(dtype), hidden_states.new_ones(n, 1, dtype=dtype)], 1)
        window = cfg.window_size
        shifts = [0, window // 2] if window and cfg.num_layers > 1 else [0]
        contexts = [flow_context(token_coords[:, 1:], token_coords[:, 0], b, encoder_hidden_states.shape[1],
                                 self.trunk.head_dim, cfg.resolution // cfg.patch_size, window, shift)
                    for shift in shifts]
        pos = sincos_position_embedding(token_coords[:, 1:], cfg.hidden_size)
        x = self.proj_in(packed.flatten(1)) + pos.to(dtype)
        out = self.trunk(x, timestep, encoder_hidden_states, contexts)
        out = out.view(-1, slots, c)[token, slot]
        return SparseFlowOutput(sample=out) if return_dict else (out,)
