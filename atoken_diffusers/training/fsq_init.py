"""Start an FSQ model from a trained continuous one with the latent re-coded for 4-level FSQ (the embedded default's
stage-4 initialisation).

Quantising every latent channel to 4 levels as it stands wastes the budget: high-variance directions get 4 levels,
low-variance ones as many. Instead the latent is rotated to its principal directions and each of the 48 FSQ channels
is given to a direction (greedy, largest error reduction first); a direction that gets k channels is quantised k times
with offsets spread over one step, so together they resolve it k times finer, and the decoder's input reads the mean
of the k dequantised values. Both maps are linear, so they fold exactly into the encoder's ``to_moments`` rows and the
decoder's input projection (its constant part into the decoder's position table); the FSQ fine-tune starts from there.

4-level FSQ (``levels`` 4): with the shifted-tanh bound, a channel's decision boundaries sit at
``-shift + {-1, 0, 1} * atanh(1 / half_l)`` before the bound, evenly spaced.
"""

from __future__ import annotations

import math

import torch


def _fsq_geometry(quantizer) -> tuple[float, float]:
    """(centre boundary u0, boundary spacing du) of 4-level channels in the quantizer's input units."""
    levels = quantizer.levels
    if not bool((levels == 4).all()):
        raise ValueError(f"FSQ re-coding supports 4-level codebooks only; got levels {levels.tolist()}.")
    half_l = 3 * (1 + quantizer.eps) / 2
    shift = math.atanh(0.5 / half_l)
    return -shift, math.atanh(1.0 / half_l)


def _quantise(c: torch.Tensor, step: float, k: int) -> torch.Tensor:
    """The mean of k offset 4-level uniform quantisers of step ``step`` centred on 0 (k = 0: 0)."""
    if k == 0:
        return torch.zeros_like(c)
    out = torch.zeros_like(c)
    for j in range(k):
        o = step * (j / k - (k - 1) / (2 * k))
        out += o + (torch.clamp(torch.floor((c - o) / step), -2, 1) + 0.5) * step
    return out / k


def allocate(c: torch.Tensor, channels: int) -> tuple[list[int], list[float]]:
    """Greedy allocation of ``channels`` quantiser channels over the columns of ``c`` (N, d) (centred principal
    coordinates); returns channels per column and the step of each column (searched per channel count)."""
    d = c.shape[1]
    steps_tried = torch.linspace(0.1, 2.5, 49)
    cache: dict[tuple[int, int], tuple[float, float]] = {}

    def best(i: int, k: int) -> tuple[float, float]:
        if (i, k) not in cache:
            col = c[:, i]
            if k == 0:
                cache[(i, k)] = (float(col.pow(2).mean()), 0.0)
            else:
                sd = float(col.std().clamp_min(1e-8))
                trials = [(float((_quantise(col, float(m) * sd / math.sqrt(k), k) - col).pow(2).mean()),
                           float(m) * sd / math.sqrt(k)) for m in steps_tried]
                cache[(i, k)] = min(trials)
        return cache[(i, k)]

    alloc = [0] * d
    for _ in range(channels):
        gains = [best(i, alloc[i])[0] - best(i, alloc[i] + 1)[0] for i in range(d)]
        i = max(range(d), key=gains.__getitem__)
        alloc[i] += 1
    return alloc, [best(i, alloc[i])[1] for i in range(d)]


@torch.no_grad()
def recode_for_fsq(fsq_model, continuous, features: torch.Tensor) -> dict:
    """Copy ``continuous`` into ``fsq_model`` (same preset with FSQ) with the re-coded latent.

    Args:
        features: (N, D) encoder output features (after the final norm) of representative training tokens.
    Returns:
        a summary: channels per principal direction, the residual of the constant-feature fit, the latent's total
        variance and its squared error after the re-coding, on ``features``.
    """
    fsq_model.load_state_dict(continuous.state_dict())
    q = fsq_model.quantizer
    if q is None:
        raise ValueError("fsq_model has no quantizer; build it with use_quantizer=True (preset small-d).")
    k = fsq_model.config.latent_channels
    u0, du = _fsq_geometry(q)
    y = features.double()
    w_mean = continuous.to_moments.weight[:k].double()              # (k, D)
    z = y @ w_mean.t()
    mu = z.mean(0)
    _, vecs = torch.linalg.eigh(torch.cov((z - mu).t()))
    vecs = vecs.flip(1)                                             # principal directions, largest variance first
    c = ((z - mu) @ vecs).float()
    # A feature combination that is 1 on every token stands in for the bias to_moments does not have.
    w_one = torch.linalg.lstsq(y, torch.ones(len(y), 1, dtype=y.dtype)).solution[:, 0]
    one_residual = float((y @ w_one - 1).abs().max())
    alloc, steps = allocate(c, k)

    rows, m_cols, bias = [], [], mu.clone()
    for i, (count, step) in enumerate(zip(alloc, steps)):
        if count == 0:
            continue
        a = du / step
        offsets = [step * (j / count - (count - 1) / (2 * count)) for j in range(count)]
        for o in offsets:  # u = a (c_i - o) + u0, c_i = vecs_i . (W y - mu)
            rows.append(a * (vecs[:, i] @ w_mean) + (-a * (vecs[:, i] @ mu) - a * o + u0) * w_one)
            m_cols.append(vecs[:, i] * (2 * step / count))          # code q in {-1, -.5, 0, .5}: cell centre o + (2q + .5) step
        bias += vecs[:, i] * (sum(offsets) / count + 0.5 * step)
    fsq_model.to_moments.weight[:k] = torch.stack(rows).to(fsq_model.to_moments.weight.dtype)
    m = torch.stack(m_cols, 1)                                      # (k, k): codes -> latent
    p_old = continuous.decoder.proj_in.weight.double()
    fsq_model.decoder.proj_in.weight.copy_(p_old @ m)
    fsq_model.decoder.pos_table.weight.add_((p_old @ bias).to(fsq_model.decoder.pos_table.weight.dtype))

    coded = sum(float((_quantise(c[:, i], steps[i], alloc[i]) - c[:, i]).pow(2).mean()) for i in range(k))
    return {"channels_per_direction": alloc, "constant_fit_residual": one_residual,
            "latent_variance": float(c.pow(2).mean(0).sum()), "latent_mse_recoded": coded}
