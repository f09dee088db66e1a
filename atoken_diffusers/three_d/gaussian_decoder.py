"""AToken's 3D Gaussian-splat decoder (official ``SLatGaussianDecoder``): voxel latents -> 32 Gaussians per voxel.

The decoder is a TRELLIS-style sparse transformer over the occupied voxels of a 64^3 grid: a linear input layer plus
sinusoidal absolute positions, pre-norm RMSNorm blocks without biases whose attention is restricted to shifted 8^3
windows (Swin style, logits soft-capped), a LayerNorm without affine parameters, and a linear head giving 448 raw
values per voxel. Those are turned into activated Gaussian attributes (sh degree 0) exactly as TRELLIS' ``Gaussian``
representation does, inside the axis-aligned box [-0.5, 0.5]^3.

``surfel_prior`` (not in the official model) makes the head output corrections to an analytic surfel per voxel
(``three_d/surfels.py``: centred on the local surface, flat along it, coloured with the mean of the feature's
non-black pixels), so a decoder with a zero head already renders a solid surface; the embedded decoder uses it (it
has seen only 7 meshes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from ..layers.attention_layer import AttentionContext
from ..layers.norms import LayerNorm32
from ..layers.sincos import sincos_position_embedding
from ..layers.transformer_block import TransformerBlock, checkpoint_function, run_blocks
from ..layers.windows import window_partition
from ..models.config_validation import check_config
from ..models.strict_loading import StrictLoadingMixin
from ..utils.validation import check_finite, check_tensor, check_voxel_coords
from .gaussians import quaternion_multiply, rgb_to_sh
from .surfels import surfels

# Raw values per Gaussian, in the order they are stored per voxel: xyz offset, DC colour, scaling, rotation, opacity.
GAUSSIAN_ATTRIBUTES = {"xyz": 3, "features_dc": 3, "scaling": 3, "rotation": 4, "opacity": 1}
DEFAULT_LR = {"xyz": 1.0, "features_dc": 1.0, "opacity": 1.0, "scaling": 1.0, "rotation": 0.1}
# Surfel prior: standard deviations along / across the surface (voxels), and how far its centre moves from the voxel
# centre to the occupied neighbours' centroid. Chosen on the 7 training meshes' held-out views (weights/build.py).
DEFAULT_SURFEL = {"tangent": 0.5, "normal": 0.05, "smoothing": 1.0}
# Gaussians live in [-0.5, 0.5]^3: unit-cube positions p map to p * AABB_SIZE + AABB_MIN.
AABB_MIN, AABB_SIZE = -0.5, 1.0


@dataclass
class GaussianDecoderOutput(BaseOutput):
    """Gaussians of :class:`ATokenGaussianDecoder`, all float32; rows of Gaussian tensors are voxel-major
    (row ``v * num_gaussians + g`` is Gaussian ``g`` of input voxel ``v``), voxels in the input row order.

    Attributes:
        raw: (N, 14 * num_gaussians) head output per voxel, before any activation.
        xyz: (N * G, 3) centres in [-0.5, 0.5]^3 (world units).
        features_dc: (N * G, 1, 3) degree-0 spherical-harmonic colour coefficients.
        scaling: (N * G, 3) positive per-axis standard deviations (at least ``filter_3d``).
        rotation: (N * G, 4) unit quaternions, w first.
        opacity: (N * G, 1) opacities in (0, 1).
    """

    raw: torch.Tensor
    xyz: torch.Tensor
    features_dc: torch.Tensor
    scaling: torch.Tensor
    rotation: torch.Tensor
    opacity: torch.Tensor


def _radical_inverse(base: int, n: int) -> float:
    """Van der Corput radical inverse of n in ``base`` (digits of n mirrored behind the radix point)."""
    value, scale = 0.0, 1.0 / base
    while n > 0:
        n, digit = divmod(n, base)
        value += digit * scale
        scale /= base
    return value


def hammersley_offsets(num_gaussians: int, voxel_size: float) -> torch.Tensor:
    """(G, 3) pre-tanh offsets spreading the G Gaussians of a voxel over a 3D Hammersley set.

    Point g is (g / G, radical_inverse_2(g), radical_inverse_3(g)) in [0, 1)^3; with the decoder's
    tanh(...) * voxel_size / 2 offset it lands at (2 h - 1) / 2 voxels from the centre when the raw offset is zero.
    """
    points = torch.tensor(
        [[g / num_gaussians, _radical_inverse(2, g), _radical_inverse(3, g)] for g in range(num_gaussians)]
    )
    return torch.atanh((points * 2 - 1) / voxel_size)


def tangent_spread(num_gaussians: int) -> torch.Tensor:
    """(G, 3) surfel-frame positions of a voxel's G Gaussians under the surfel prior, in voxels: a 2D Hammersley set
    in the tangent plane, centred (one Gaussian sits at the surfel's centre), none across the surface."""
    points = torch.tensor([[g / num_gaussians, _radical_inverse(2, g), 0.0] for g in range(num_gaussians)])
    points[:, :2] -= points[:, :2].mean(0)
    return points


class ATokenGaussianDecoder(StrictLoadingMixin, ModelMixin, ConfigMixin):
    r"""AToken's Gaussian-splat decoder: (N, latent_channels) voxel features + (N, 4) voxel coordinates -> Gaussians.

    Args:
        resolution: side of the voxel grid; coordinates lie in [0, resolution).
        model_channels, num_blocks, num_heads, mlp_channels: transformer width, depth, heads and MLP size.
        latent_channels: input features per voxel (the first 768 channels of AToken's 3D decoder output).
        window_size: side of the attention windows; odd blocks shift them by ``window_size // 2`` voxels.
        num_gaussians: Gaussians per voxel (G).
        voxel_size: reach of a Gaussian centre around its voxel centre, in voxels (1.5 -> +-0.75 voxel).
        lr: per-attribute multipliers of the raw values (keys xyz, features_dc, scaling, rotation, opacity).
        perturb_offset: add the Hammersley ``offset_perturbation`` to the raw xyz offsets.
        filter_3d: minimum scale, combined as sqrt(s^2 + filter_3d^2).
        scaling_bias: scale of a Gaussian whose raw scaling is 0.
        opacity_bias: opacity of a Gaussian whose raw opacity is 0.
        softcap: attention logits are capped as softcap * tanh(logits / softcap).
        surfel_prior: None (official) or {"tangent", "normal", "smoothing"} (missing keys: ``DEFAULT_SURFEL``): the
            raw values become corrections to each voxel's analytic surfel (see the module docstring): offsets in
            its frame around :func:`tangent_spread`, log-factors of its scales, a rotation after its frame, a colour
            added to its colour; opacity as without it. Needs ``perturb_offset=False`` and features made of
            RGB triples.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["TransformerBlock"]
    _depth_keys = {"blocks": "num_blocks"}  # for load errors
    default_lr = DEFAULT_LR  # the keys config ``lr`` may set
    default_surfel = DEFAULT_SURFEL  # the keys config ``surfel_prior`` may set

    @register_to_config
    def __init__(
        self,
        resolution: int = 64,
        model_channels: int = 768,
        latent_channels: int = 768,
        num_blocks: int = 12,
        num_heads: int = 12,
        mlp_channels: int = 3072,
        window_size: int = 8,
        num_gaussians: int = 32,
        voxel_size: float = 1.5,
        lr: dict | None = None,
        perturb_offset: bool = True,
        filter_3d: float = 9e-4,
        scaling_bias: float = 4e-3,
        opacity_bias: float = 0.1,
        softcap: float = 30.0,
        surfel_prior: dict | None = None,
    ):
        super().__init__()
        check_config(type(self), self.config)  # types, ranges and cross-key rules (models/config_validation.py)
        self.register_to_config(lr={**DEFAULT_LR, **(lr or {})})
        if surfel_prior is not None:
            self.register_to_config(surfel_prior={**DEFAULT_SURFEL, **surfel_prior})
            self.register_buffer("surfel_spread", tangent_spread(num_gaussians), persistent=False)
        self.proj_in = nn.Linear(latent_channels, model_channels, bias=False)
        self.blocks = nn.ModuleList(
            TransformerBlock(model_channels, num_heads, mlp_channels, norm="rms", bias=False, softcap=softcap)
            for _ in range(num_blocks)
        )
        self.norm_out = LayerNorm32(model_channels, eps=1e-5, elementwise_affine=False)
        self.proj_out = nn.Linear(model_channels, num_gaussians * sum(GAUSSIAN_ATTRIBUTES.values()))
        # Stored in checkpoints (the official state dict has it) but computed here too, so a fresh model is complete.
        self.register_buffer("offset_perturbation", hammersley_offsets(num_gaussians, voxel_size))
        if surfel_prior is not None:  # a fresh decoder renders the surfels themselves; training learns corrections
            nn.init.zeros_(self.proj_out.weight)
            nn.init.zeros_(self.proj_out.bias)
        self.gradient_checkpointing = False

    def forward(self, feats: torch.Tensor, coords: torch.Tensor) -> GaussianDecoderOutput:
        """Decode voxel features into Gaussians.

        Args:
            feats: (N, latent_channels) float voxel features (any float dtype; cast to the model's dtype).
            coords: (N, 4) integer (batch, x, y, z) voxel coordinates, batch >= 0 and x, y, z in [0, resolution).
                Rows may be in any order and samples interleaved; attention never crosses samples.
        Returns:
            :class:`GaussianDecoderOutput` (float32), rows in the input order (voxel-major for Gaussians).
        """
        self._check_inputs(feats, coords)
        cfg = self.config
        coords = coords.long()
        dtype = self.proj_in.weight.dtype
        h = self.proj_in(feats.to(dtype)) + sincos_position_embedding(coords[:, 1:], cfg.model_channels).to(dtype)
        # Even blocks attend within window^3 cubes, odd blocks within cubes shifted by half a window.
        shifts = (0, cfg.window_size // 2) if cfg.num_blocks > 1 else (0,)
        contexts = []
        for shift in shifts:
            order, inverse, plan = window_partition(coords[:, 0], coords[:, 1:], cfg.window_size, shift, cfg.resolution)
            contexts.append(AttentionContext(plan, order=order, inverse=inverse))
        h = run_blocks(self.blocks, h, contexts, checkpoint=checkpoint_function(self))
        raw = self.proj_out(self.norm_out(h)).float()  # Gaussian maths in float32 whatever the model dtype
        return self.to_gaussians(raw, coords, feats)

    def to_gaussians(self, raw: torch.Tensor, coords: torch.Tensor,
                     feats: torch.Tensor | None = None) -> GaussianDecoderOutput:
        """(N, 14 G) float32 raw head output + (N, 4) coordinates -> activated Gaussians (see the output class).
        ``feats`` (N, latent_channels), the decoder's input, is needed (for the colours) with ``surfel_prior``."""
        cfg, n, g = self.config, raw.shape[0], self.config.num_gaussians
        # Per voxel the raw values are attribute after attribute, each stored Gaussian-major: (G, width).
        parts = dict(zip(GAUSSIAN_ATTRIBUTES, raw.split([g * w for w in GAUSSIAN_ATTRIBUTES.values()], dim=1)))
        scaled = {k: parts[k].reshape(n * g, w) * cfg.lr[k] for k, w in GAUSSIAN_ATTRIBUTES.items()}
        opacity_shift = math.log(cfg.opacity_bias / (1 - cfg.opacity_bias))
        identity = torch.tensor([1.0, 0.0, 0.0, 0.0], device=raw.device)
        if cfg.surfel_prior is not None:
            if feats is None:
                raise ValueError("feats is required with surfel_prior (the surfels' colours come from it).")
            return self._on_surfels(raw, scaled, coords, feats, opacity_shift, identity)

        offset = scaled["xyz"].view(n, g, 3)
        if cfg.perturb_offset:
            offset = offset + self.offset_perturbation.float()
        centres = (coords[:, 1:].float() + 0.5) / cfg.resolution
        xyz = centres[:, None] + torch.tanh(offset) / cfg.resolution * 0.5 * cfg.voxel_size
        # Inverse softplus / logit of the biases, so that a zero raw value gives exactly the bias.
        scale_shift = cfg.scaling_bias + math.log(-math.expm1(-cfg.scaling_bias))
        return GaussianDecoderOutput(
            raw=raw,
            xyz=xyz.flatten(0, 1) * AABB_SIZE + AABB_MIN,
            features_dc=scaled["features_dc"].view(n * g, 1, 3),
            scaling=torch.sqrt(F.softplus(scaled["scaling"] + scale_shift).square() + cfg.filter_3d**2),
            rotation=F.normalize(scaled["rotation"] + identity, dim=-1),
            opacity=torch.sigmoid(scaled["opacity"] + opacity_shift),
        )

    def _on_surfels(self, raw, scaled, coords, feats, opacity_shift, identity) -> GaussianDecoderOutput:
        """The surfel-prior reading of the scaled raw values (see ``surfel_prior`` in the class docstring)."""
        cfg, n, g = self.config, raw.shape[0], self.config.num_gaussians
        prior = surfels(coords, feats, cfg.resolution, **cfg.surfel_prior)
        local = self.surfel_spread.float() + torch.tanh(scaled["xyz"].view(n, g, 3)) * (0.5 * cfg.voxel_size)
        xyz = prior["centre"][:, None] + torch.einsum("nij,ngj->ngi", prior["frame"], local) / cfg.resolution
        scale = prior["scale"].repeat_interleave(g, 0) * torch.exp(scaled["scaling"])
        turn = F.normalize(scaled["rotation"] + identity, dim=-1)
        return GaussianDecoderOutput(
            raw=raw,
            xyz=xyz.flatten(0, 1) * AABB_SIZE + AABB_MIN,
            features_dc=(rgb_to_sh(prior["rgb"]).repeat_interleave(g, 0) + scaled["features_dc"]).view(n * g, 1, 3),
            scaling=torch.sqrt(scale.square() + cfg.filter_3d**2),
            rotation=F.normalize(quaternion_multiply(prior["quaternion"].repeat_interleave(g, 0), turn), dim=-1),
            opacity=torch.sigmoid(scaled["opacity"] + opacity_shift),
        )

    def _check_inputs(self, feats: torch.Tensor, coords: torch.Tensor) -> None:
        cfg = self.config
        check_tensor(feats, "feats")
        check_tensor(coords, "coords")
        if feats.ndim != 2 or feats.shape[1] != cfg.latent_channels:
            raise ValueError(
                f"feats must have shape (N, {cfg.latent_channels}) (latent_channels); got {tuple(feats.shape)}. "
                "For AToken's 3D decoder output take its first 768 channels."
            )
        if not feats.is_floating_point():
            raise TypeError(f"feats must be a float tensor; got {feats.dtype}.")
        check_voxel_coords(coords, cfg.resolution, rows=feats.shape[0], rows_of="feats")
        check_finite(feats, "feats")
