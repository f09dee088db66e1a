"""Start an FSQ model from a trained continuous one with the latent re-coded for its FSQ levels (the embedded
default's stage-4 initialisation).

Quantising every latent channel as it stands wastes the budget: high-variance directions get as few levels as
low-variance ones. Instead the latent is rotated to its principal directions and each FSQ channel is given to one
direction, the channels with the most levels to the directions with the most variance (so a codebook of mixed levels
such as [16, 8, 4, 2, 2, 2] spends its 12 bits where the variance is). Per direction, the encoder's scale is searched
and the decoder reads each code through the least-squares affine map back to the direction's value. Both maps are
linear, so they fold exactly into the encoder's ``to_moments`` rows and the decoder's input projection (its constant
part into the decoder's position table); the FSQ fine-tune starts from there.

The FSQ bound is a shifted tanh, so in the encoder's units a channel's decision boundaries sit at
``atanh(t / half_l) - shift`` for evenly spaced t: they widen towards the tails, like a compander for a bell-shaped
variable (the searched gain sets how much of that range a direction spans).
"""

from __future__ import annotations

import math

import torch

SCALES = torch.linspace(0.05, 3.0, 60)  # encoder gains tried per direction, in units of 1 / (the direction's std)


def channel_levels(quantizer) -> torch.Tensor:
    """(latent channels,) levels of every FSQ channel, in latent order."""
    return quantizer.levels.repeat(quantizer.num_codebooks).long()


def _half_offset_shift(levels: int, eps: float) -> tuple[float, float, float]:
    """The quantizer's half width, code offset and tanh shift for a channel of ``levels`` levels."""
    half_l = (levels - 1) * (1 + eps) / 2
    offset = 0.5 if levels % 2 == 0 else 0.0
    return half_l, offset, math.atanh(offset / half_l)


def quantise(c: torch.Tensor, gain: float, levels: int, eps: float) -> torch.Tensor:
    """FSQ codes in [-1, 1] of values ``c`` fed to one channel of ``levels`` levels as ``gain * c - shift`` (the
    quantizer's shift undone, so the cells lie symmetric about 0), without the straight-through part."""
    half_l, offset, _ = _half_offset_shift(levels, eps)
    return torch.round((gain * c).tanh() * half_l - offset) / (levels // 2)


def fit_direction(c: torch.Tensor, levels: int, eps: float) -> dict:
    """The best encoder gain for values ``c`` (N,) on one channel of ``levels`` levels, with the decoder's affine
    read-out (code -> value) fitted by least squares: {"gain", "slope", "intercept", "mse"}."""
    sd = float(c.std().clamp_min(1e-8))
    best = None
    for g in SCALES.tolist():
        code = quantise(c, g / sd, levels, eps)
        design = torch.stack([code, torch.ones_like(code)], 1)
        sol = torch.linalg.lstsq(design, c[:, None]).solution[:, 0]
        mse = float((design @ sol - c).pow(2).mean())
        if best is None or mse < best["mse"]:
            best = {"gain": g / sd, "slope": float(sol[0]), "intercept": float(sol[1]), "mse": mse}
    return best


@torch.no_grad()
def recode_for_fsq(fsq_model, continuous, features: torch.Tensor) -> dict:
    """Copy ``continuous`` into ``fsq_model`` (same preset with FSQ) with the re-coded latent.

    Args:
        features: (N, D) encoder output features (after the final norm) of representative training tokens.
    Returns:
        a summary: the levels given to each principal direction (largest variance first), the residual of the
        constant-feature fit, the latent's total variance and its squared error after the re-coding, on
        ``features``.
    """
    fsq_model.load_state_dict(continuous.state_dict())
    q = fsq_model.quantizer
    if q is None:
        raise ValueError("fsq_model has no quantizer; build it with use_quantizer=True (preset small-d).")
    k = fsq_model.config.latent_channels
    y = features.double()
    w_mean = continuous.to_moments.weight[:k].double()              # (k, D)
    z = y @ w_mean.t()
    mu = z.mean(0)
    _, vecs = torch.linalg.eigh(torch.cov((z - mu).t()))
    vecs = vecs.flip(1)                                             # principal directions, largest variance first
    c = (z - mu) @ vecs
    # A feature combination that is 1 on every token stands in for the bias to_moments does not have.
    w_one = torch.linalg.lstsq(y, torch.ones(len(y), 1, dtype=y.dtype)).solution[:, 0]
    one_residual = float((y @ w_one - 1).abs().max())
    levels = channel_levels(q)
    slots = sorted(range(k), key=lambda s: -int(levels[s]))          # stable: most levels first
    rows = torch.zeros_like(w_mean)
    m = torch.zeros(k, k, dtype=y.dtype)                            # codes -> latent
    bias, coded, given = mu.clone(), 0.0, []
    for i, s in enumerate(slots):  # direction i (by variance) -> FSQ channel s
        L = int(levels[s])
        fit = fit_direction(c[:, i], L, q.eps)
        shift = _half_offset_shift(L, q.eps)[2]  # u = gain * c_i - shift: cells symmetric about c_i = 0
        rows[s] = fit["gain"] * (vecs[:, i] @ w_mean) + (-fit["gain"] * (vecs[:, i] @ mu) - shift) * w_one
        m[:, s] = vecs[:, i] * fit["slope"]
        bias += vecs[:, i] * fit["intercept"]
        coded += fit["mse"]
        given.append(L)
    fsq_model.to_moments.weight[:k] = rows.to(fsq_model.to_moments.weight.dtype)
    p_old = continuous.decoder.proj_in.weight.double()
    fsq_model.decoder.proj_in.weight.copy_(p_old @ m)
    fsq_model.decoder.pos_table.weight.add_((p_old @ bias).to(fsq_model.decoder.pos_table.weight.dtype))
    return {"levels_per_direction": given, "constant_fit_residual": one_residual,
            "latent_variance": float(c.pow(2).mean(0).sum()), "latent_mse_recoded": coded}
