"""FSQ directly: the index <-> code bijection over every codebook entry, the quantiser's image, channel-first helpers,
and configs that state the true codebook size."""

import math

import pytest
import torch

from atoken_diffusers import AutoencoderAToken
from atoken_diffusers.quantizers.fsq import FSQ, SUGGESTED_LEVELS, resolve_levels

LEVEL_SETS = sorted({tuple(levels) for levels in SUGGESTED_LEVELS.values()} | {(2, 3), (7,)})


def _latent_for(fsq: FSQ, codes: torch.Tensor) -> torch.Tensor:
    """A latent that quantises to ``codes``: the inverse of the tanh bound at the grid point (AToken's formula)."""
    half_l = (fsq.levels - 1) * (1 + fsq.eps) / 2
    offset = torch.where(fsq.levels % 2 == 0, 0.5, 0.0)
    bounded = codes.unflatten(-1, (fsq.num_codebooks, fsq.codebook_dim)) * (fsq.levels // 2)
    return (((bounded + offset) / half_l).atanh() - (offset / half_l).atanh()).flatten(-2)


@pytest.mark.parametrize("levels", LEVEL_SETS, ids=str)
def test_indices_and_codes_are_a_bijection_over_the_whole_codebook(levels):
    fsq = FSQ(levels, num_codebooks=2)
    n = math.prod(levels)
    assert fsq.codebook_size == n
    every = torch.stack([torch.arange(n), torch.arange(n).flip(0)], dim=-1)  # (n, 2): both codebooks, all entries
    codes = fsq.indices_to_codes(every)
    assert codes.shape == (n, 2 * len(levels))
    assert torch.equal(fsq.codes_to_indices(codes), every)
    assert len(torch.unique(codes[:, : len(levels)], dim=0)) == n  # n distinct code vectors, one per index
    half = torch.tensor(levels) // 2
    grid = codes.unflatten(-1, (2, len(levels))) * half  # integer steps around the centre
    assert torch.equal(grid, grid.round())
    assert ((grid >= -half) & (grid <= torch.tensor(levels) - 1 - half)).all()


@pytest.mark.parametrize("levels", LEVEL_SETS, ids=str)
def test_quantise_lands_on_the_grid_and_reaches_every_entry(levels):
    fsq = FSQ(levels, num_codebooks=1)
    codes = fsq.indices_to_codes(torch.arange(fsq.codebook_size)[:, None])
    requantised, indices = fsq.quantize(_latent_for(fsq, codes))
    assert torch.equal(requantised, codes) and torch.equal(indices[:, 0], torch.arange(fsq.codebook_size))
    z = torch.randn(4096, len(levels)) * 3
    q, idx = fsq.quantize(z)
    assert torch.equal(fsq.indices_to_codes(idx), q) and torch.equal(fsq.codes_to_indices(q), idx)
    again, _ = fsq.quantize(_latent_for(fsq, q))  # quantising a latent of a quantised value changes nothing
    assert torch.equal(again, q)
    assert idx.min() >= 0 and idx.max() < fsq.codebook_size


def test_quantise_keeps_dtype_and_passes_gradients_straight_through():
    fsq = FSQ([4, 4, 4, 4, 4, 4], num_codebooks=2)
    z = torch.randn(3, 12, requires_grad=True)
    codes, _ = fsq.quantize(z)
    codes.sum().backward()
    assert z.grad is not None and (z.grad > 0).all()  # tanh' > 0 everywhere, rounding passes the gradient
    assert fsq.quantize(z.detach().bfloat16())[0].dtype == torch.bfloat16


def test_channel_first_helpers_equal_moving_the_axis_by_hand():
    fsq = FSQ([8, 5, 5, 5], num_codebooks=3)
    z = torch.randn(2, 12, 3, 4, 5)  # (B, C, t, h, w)
    codes, indices = fsq.quantize_channels_first(z)
    manual_codes, manual_indices = fsq.quantize(z.movedim(1, -1))
    assert torch.equal(codes, manual_codes.movedim(-1, 1)) and torch.equal(indices, manual_indices.movedim(-1, 1))
    assert indices.shape == (2, 3, 3, 4, 5)
    assert torch.equal(fsq.indices_to_codes_channels_first(indices), codes)


def test_config_states_the_true_codebook_size():
    assert resolve_levels(None, None) == [4] * 6
    assert resolve_levels(4096, None) == [4] * 6  # old configs (and shipped atoken-small-d) carry 4096 = 4^6
    with pytest.raises(ValueError, match=r"fsq_codebook_size=1024 is not exactly representable.*give 1000 codes.*"
                                         r"fsq_levels=\[8, 5, 5, 5\]"):
        resolve_levels(1024, None)
    with pytest.raises(ValueError, match=r"fsq_codebook_size=1024 contradicts fsq_levels=\[8, 5, 5, 5\].*1000"):
        resolve_levels(1024, [8, 5, 5, 5])
    with pytest.raises(ValueError, match="fsq_levels must be a non-empty list of integers >= 2"):
        resolve_levels(None, [4, 1])
    model = AutoencoderAToken.from_preset("tiny-d", fsq_levels=[8, 5, 5, 5], fsq_num_codebooks=3)
    assert model.config.fsq_codebook_size == model.quantizer.codebook_size == 1000
    assert model.config.fsq_levels == [8, 5, 5, 5]
    legacy = AutoencoderAToken.from_preset("tiny", use_quantizer=True, fsq_codebook_size=4096, fsq_num_codebooks=2)
    assert legacy.config.fsq_levels == [4] * 6 and legacy.quantizer.codebook_size == 4096
    with pytest.raises(ValueError, match="needs latent_channels = 8"):
        AutoencoderAToken.from_preset("tiny-d", fsq_levels=[8, 5, 5, 5], fsq_num_codebooks=2)
