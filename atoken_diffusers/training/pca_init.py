"""Start an AToken autoencoder as a per-patch PCA codec (the embedded default's stage-1 initialisation).

At step 0 the model computes, almost exactly, ``PCACodec``'s reconstruction: the encoder's input projection holds the
PCA basis, the decoder's output projection its transpose, every residual branch is zero, and the remaining hidden
channels carry a large constant so that LayerNorm/RMSNorm act as a near-constant scale. Training then starts from a
codec that is already as good as the linear baseline and only has to learn what context adds (cross-patch
consistency, which removes the patch grid, and non-linear detail).

Hidden channel layout (width D, latent channels k, needs D >= 2k + 2):
``[ +coefficients (k) | -coefficients (k) | alternating +C / -C (D - 2k) ]``: the mirrored halves and the alternating
constants keep the channel mean exactly 0, so LayerNorm subtracts nothing and divides by a norm dominated by C.
"""

from __future__ import annotations

import math

import torch

from ..tokens.patchify import PATCH_SIZE

PATCH_VALUES = PATCH_SIZE[1] * PATCH_SIZE[2] * 3  # 768: one frame of one patch


def alternating(n: int, value: float) -> torch.Tensor:
    """(n,) +value, -value, +value, ...: constant hidden channels whose mean is (about) zero."""
    return value * torch.tensor([1.0, -1.0]).repeat(n // 2 + 1)[:n]


def _constant_pattern(dim: int, k: int, value: float) -> torch.Tensor:
    """(dim,) zeros on the 2k coefficient channels, then :func:`alternating` constants on the rest."""
    return torch.cat([torch.zeros(2 * k), alternating(dim - 2 * k, value)])


@torch.no_grad()
def init_from_pca(model, mean: torch.Tensor, basis: torch.Tensor, scale: float = 1.0, constant: float = 20.0,
                  signal: float = 1.0, logvar: float = -8.0) -> None:
    """Make ``model`` (an :class:`AutoencoderAToken`, continuous) compute the PCA codec ``(mean, basis)``.

    Args:
        mean: (768,) mean image patch in [-1, 1] (token order (ph, pw, c)).
        basis: (768, k) orthonormal PCA components, k = the model's latent channels.
        scale: latents are ``scale`` * PCA coefficients (``PCACodec.scale`` gives them an overall std of about 1).
        constant: the value C of the constant hidden channels (larger: more linear norms at step 0).
        signal: scale of the PCA coefficients in the residual stream.
        logvar: the posterior log-variance at step 0 (small sampling noise).
    Video tokens start as "frame 0 held for four frames": the encoder reads frame 0 only and the decoder repeats its
    reconstruction (on slow clips this already beats PCA of 4 x 16 x 16 patches); video training can learn the rest.
    """
    enc, dec = model.encoder, model.decoder
    k, d_enc, d_dec = basis.shape[1], enc.proj_in.out_features, dec.proj_in.out_features
    if basis.shape != (PATCH_VALUES, model.config.latent_channels) or mean.shape != (PATCH_VALUES,):
        raise ValueError(f"basis must be ({PATCH_VALUES}, latent_channels={model.config.latent_channels}) and mean "
                         f"({PATCH_VALUES},); got {tuple(basis.shape)} and {tuple(mean.shape)}.")
    if min(d_enc, d_dec) < 2 * k + 2 or model.quantizer is not None:
        raise ValueError(f"PCA init needs a continuous model with encoder/decoder width >= 2 * latent_channels + 2 "
                         f"({2 * k + 2}); got widths {d_enc}, {d_dec}{' and an FSQ quantizer' if model.quantizer else ''}.")
    basis, mean = basis.float(), mean.float()
    for stack, width in ((enc, d_enc), (dec, d_dec)):  # residual branches off: every block is the identity
        sigma = constant * math.sqrt((width - 2 * k) / width)
        for block in stack.blocks:
            for layer in (block.attn.to_out, block.mlp.fc2):
                layer.weight.zero_()
                if layer.bias is not None:
                    layer.bias.zero_()
            # The blocks read the coefficients only, at the latents' scale: a constant in their inputs would make
            # every token look alike to attention and swamp the weights' gradients with the constant's.
            for norm in (block.norm1, block.norm2):
                norm.weight.zero_()
                norm.weight[:2 * k] = sigma * scale / signal
                if getattr(norm, "bias", None) is not None:
                    norm.bias.zero_()
        stack.pos_table.weight.zero_()
        stack.norm_out.weight.fill_(1.0)
        if getattr(stack.norm_out, "bias", None) is not None:
            stack.norm_out.bias.zero_()

    # Encoder: h = [s a | -s a | ±C], a = basis^T (x - mean) over frame 0; LayerNorm divides by ~sigma.
    const_e = _constant_pattern(d_enc, k, constant)
    sigma_e = constant * math.sqrt((d_enc - 2 * k) / d_enc)
    w = enc.proj_in.weight
    w.zero_()
    w[:k, :PATCH_VALUES] = signal * basis.t()
    w[k:2 * k, :PATCH_VALUES] = -signal * basis.t()
    a_mean = basis.t() @ mean
    enc.proj_in.bias.copy_(const_e)
    enc.proj_in.bias[:k] = -signal * a_mean
    enc.proj_in.bias[k:2 * k] = signal * a_mean

    g = scale
    m = model.to_moments.weight
    m.zero_()
    eye = torch.eye(k)
    m[:k, :k] = eye * sigma_e * g / (2 * signal)
    m[:k, k:2 * k] = -eye * sigma_e * g / (2 * signal)
    signs_e = torch.sign(const_e[2 * k:])
    m[k:, 2 * k:] = logvar * signs_e / ((d_enc - 2 * k) * constant / sigma_e)

    # Decoder: h = [s z/g | -s z/g] + position table ±C; RMSNorm; out = mean + basis a, frame 0 repeated.
    const_d = _constant_pattern(d_dec, k, constant)
    sigma_d = constant * math.sqrt((d_dec - 2 * k) / d_dec)
    dec.proj_in.weight.zero_()
    dec.proj_in.weight[:k] = eye * signal / g
    dec.proj_in.weight[k:2 * k] = -eye * signal / g
    dec.pos_table.weight.copy_(const_d.expand_as(dec.pos_table.weight))
    out = torch.zeros(PATCH_VALUES, d_dec)
    out[:, :k] = basis * sigma_d / (2 * signal)
    out[:, k:2 * k] = -basis * sigma_d / (2 * signal)
    out[:, 2 * k:] = mean[:, None] * torch.sign(const_d[2 * k:])[None] / ((d_dec - 2 * k) * constant / sigma_d)
    frames = dec.proj_out.out_features // PATCH_VALUES
    dec.proj_out.weight.copy_(out.repeat(frames, 1))

