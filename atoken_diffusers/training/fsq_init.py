"""Start an FSQ model from a trained continuous one with the latent re-coded for its FSQ levels (the embedded
default's stage-4 initialisation).

Quantising every latent channel as it stands wastes the budget: high-variance directions get as few levels as
low-variance ones. Instead the latent is rotated to its principal directions and the FSQ channels are handed out
greedily, the channels with the most levels first, each to the direction whose coding error it lowers most (so a
codebook of mixed levels such as [128, 16, 4, 2, 2, 2] spends its bits where the variance is). A direction may take
several channels of the same level count, offset against each other so that their cells interleave: two 2-level
channels then code a direction in 3 cells, four in 5. Per direction, the encoder's scale is searched and the decoder
reads its codes through the least-squares affine map back to the direction's value. Both maps are
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


def quantise(c: torch.Tensor, gain: float, levels: int, eps: float, delta: float = 0.0) -> torch.Tensor:
    """FSQ codes in [-1, 1] of values ``c`` fed to one channel of ``levels`` levels as ``gain * c - shift + delta``
    (the quantizer's shift undone, so that with ``delta`` 0 the cells lie symmetric about 0), without the
    straight-through part."""
    half_l, offset, _ = _half_offset_shift(levels, eps)
    return torch.round((gain * c + delta).tanh() * half_l - offset) / (levels // 2)


def channel_offsets(levels: int, channels: int, eps: float) -> list[float]:
    """Offsets (encoder units) of ``channels`` channels sharing one direction: they split the central cell evenly,
    so together their boundaries are ``channels`` times denser there (a single channel gets offset 0)."""
    half_l = _half_offset_shift(levels, eps)[0]
    step = math.atanh(min(0.999, 1.0 / half_l))  # width of the central cell in encoder units
    return [step * ((j + 0.5) / channels - 0.5) for j in range(channels)]


def fit_direction(c: torch.Tensor, levels: int, eps: float, channels: int = 1) -> dict:
    """The best encoder gain for values ``c`` (N,) coded by ``channels`` channels of ``levels`` levels (at
    :func:`channel_offsets`), with the decoder's affine read-out (codes -> value) fitted by least squares:
    {"gain", "offsets", "slopes", "intercept", "mse"}."""
    sd = float(c.std().clamp_min(1e-8))
    offsets = channel_offsets(levels, channels, eps)
    best = None
    for g in SCALES.tolist():
        codes = [quantise(c, g / sd, levels, eps, d) for d in offsets]
        design = torch.stack([*codes, torch.ones_like(c)], 1)
        sol = torch.linalg.lstsq(design, c[:, None]).solution[:, 0]
        mse = float((design @ sol - c).pow(2).mean())
        if best is None or mse < best["mse"]:
            best = {"gain": g / sd, "offsets": offsets, "slopes": sol[:-1].tolist(), "intercept": float(sol[-1]),
                    "mse": mse}
    return best


def allocate_channels(c: torch.Tensor, levels: torch.Tensor, eps: float) -> dict[int, tuple[list[int], dict]]:
    """Greedy allocation of FSQ channels to principal directions: channels with the most levels first, each to the
    direction whose coding error it lowers most, where a direction only takes channels of one level count.
    ``c`` (N, k): values along the directions. Returns {direction: (channels, fit of those channels)}."""
    fits: dict[tuple[int, int, int], dict] = {}

    def error(i: int, n: int, L: int) -> float:
        if n == 0:
            return float(c[:, i].pow(2).mean())
        if (i, n, L) not in fits:
            fits[(i, n, L)] = fit_direction(c[:, i], L, eps, n)
        return fits[(i, n, L)]["mse"]

    given: dict[int, list[int]] = {}
    for s in sorted(range(len(levels)), key=lambda s: -int(levels[s])):  # stable: most levels first
        L = int(levels[s])
        candidates = [i for i in range(c.shape[1]) if i not in given or int(levels[given[i][0]]) == L]
        i = max(candidates, key=lambda i: error(i, len(given.get(i, [])), L) - error(i, len(given.get(i, [])) + 1, L))
        given.setdefault(i, []).append(s)
    return {i: (slots, fits[(i, len(slots), int(levels[slots[0]]))]) for i, slots in sorted(given.items())}


@torch.no_grad()
def recode_for_fsq(fsq_model, continuous, features: torch.Tensor) -> dict:
    """Copy ``continuous`` into ``fsq_model`` (same preset with FSQ) with the re-coded latent.

    Args:
        features: (N, D) encoder output features (after the final norm) of representative training tokens.
    Returns:
        a summary: per principal direction (largest variance first) the levels and number of its channels, the
        residual of the constant-feature fit, the latent's total variance and its squared error after the
        re-coding, on ``features``.
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
    rows = torch.zeros_like(w_mean)
    m = torch.zeros(k, k, dtype=y.dtype)                            # codes -> latent
    bias = mu.clone()
    allocation = allocate_channels(c, levels, q.eps)
    for i, (slots, fit) in allocation.items():  # direction i (by variance) -> FSQ channels ``slots``
        shift = _half_offset_shift(int(levels[slots[0]]), q.eps)[2]  # undone, so cells sit symmetric about c_i = 0
        for s, delta, slope in zip(slots, fit["offsets"], fit["slopes"]):
            rows[s] = fit["gain"] * (vecs[:, i] @ w_mean) + (-fit["gain"] * (vecs[:, i] @ mu) - shift + delta) * w_one
            m[:, s] = vecs[:, i] * slope
        bias += vecs[:, i] * fit["intercept"]
    coded = sum(fit["mse"] for _, fit in allocation.values())
    uncoded = sum(float(c[:, i].pow(2).mean()) for i in range(k) if i not in allocation)
    fsq_model.to_moments.weight[:k] = rows.to(fsq_model.to_moments.weight.dtype)
    p_old = continuous.decoder.proj_in.weight.double()
    fsq_model.decoder.proj_in.weight.copy_(p_old @ m)
    fsq_model.decoder.pos_table.weight.add_((p_old @ bias).to(fsq_model.decoder.pos_table.weight.dtype))
    return {"channels_per_direction": [[int(levels[slots[0]]), len(slots)] for slots, _ in allocation.values()],
            "constant_fit_residual": one_residual, "latent_variance": float(c.pow(2).mean(0).sum()),
            "latent_mse_recoded": coded + uncoded}
