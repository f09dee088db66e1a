"""Tokens, layouts, RoPE and the packed attention, against straightforward references."""

import math

import pytest
import torch
import torch.nn.functional as F

from atoken_diffusers.layers.attention import AttentionPlan, varlen_attention
from atoken_diffusers.layers.rope import RotaryTables
from atoken_diffusers.tokens import build_layout, grid_to_tokens, pad_to_patches, tokens_to_grid


def test_patchify_roundtrip_and_layout_convention():
    x = torch.randn(2, 3, 8, 32, 48)
    tokens = grid_to_tokens(x)
    assert tokens.feats.shape == (2 * 2 * 2 * 3, 3072)
    # token n = ((b*t + t)*h + x)*w + y; vector index ((pt*16 + ph)*16 + pw)*3 + c
    b, t, row, col, pt, ph, pw, c = 1, 1, 1, 2, 3, 5, 7, 2
    n = ((b * 2 + t) * 2 + row) * 3 + col
    assert tokens.coords[n].tolist() == [b, t, row, col, 0]
    assert tokens.feats[n, ((pt * 16 + ph) * 16 + pw) * 3 + c] == x[b, c, 4 * t + pt, 16 * row + ph, 16 * col + pw]
    assert torch.equal(tokens_to_grid(tokens.feats, (2, 2, 2, 3)), x)


def test_padding_repeats_borders_and_adds_grey_frames():
    x = torch.rand(1, 3, 5, 20, 30) * 2 - 1
    p = pad_to_patches(x)
    assert p.shape == (1, 3, 8, 32, 32)
    assert torch.equal(p[:, :, :5, 20:, :30], x[:, :, :, -1:, :].expand(-1, -1, -1, 12, -1))
    assert (p[:, :, 5:] == 0).all()


def _reference_attention(q, k, v, groups_q, groups_k):
    out = torch.empty_like(q)
    for g in groups_q.unique():
        qi, ki = groups_q == g, groups_k == g
        out[qi] = F.scaled_dot_product_attention(
            q[qi].transpose(0, 1), k[ki].transpose(0, 1), v[ki].transpose(0, 1)
        ).transpose(0, 1)
    return out


def test_varlen_attention_matches_per_group_loop():
    torch.manual_seed(0)
    q_len, k_len = torch.tensor([3, 7, 1]), torch.tensor([5, 2, 4])
    q, k, v = torch.randn(11, 2, 8), torch.randn(11, 2, 8), torch.randn(11, 2, 8)
    plan = AttentionPlan(q_len, k_len)
    gq = torch.repeat_interleave(torch.arange(3), q_len)
    gk = torch.repeat_interleave(torch.arange(3), k_len)
    torch.testing.assert_close(varlen_attention(q, k, v, plan), _reference_attention(q, k, v, gq, gk))
    # soft-capped logits with a huge cap equal plain attention
    torch.testing.assert_close(varlen_attention(q, k, v, plan, softcap=1e6), _reference_attention(q, k, v, gq, gk))


def test_rope_is_relative_and_preserves_norm():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 32), torch.randn(1, 1, 32)
    pos = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    shift = torch.tensor([[5.0, -1.0, 7.0, 2.0]])
    dot = lambda a, b: (RotaryTables(a, 32).rotate(q) * RotaryTables(b, 32).rotate(k)).sum()  # noqa: E731
    torch.testing.assert_close(dot(pos, pos * 0), dot(pos + shift, shift))
    torch.testing.assert_close(RotaryTables(pos, 32).rotate(q).norm(), q.norm())
    # frequencies divide by the head dim: the second t-pair rotates by t * 10000^(-1/32)
    x = torch.tensor([[[0.0, 0.0, 1.0, 0.0] + [0.0] * 28]])
    rot = RotaryTables(torch.tensor([[1.0, 0, 0, 0]]), 32).rotate(x)
    angle = 10000 ** (-1 / 32)
    torch.testing.assert_close(rot[0, 0, 2:4], torch.tensor([math.cos(angle), math.sin(angle)]))


def test_layout_tiles_and_cache_windows():
    # one sample, 7 latent frames of 1 x 1 tokens; stride 3, cache 1: tiles [0,1,2] [3,4,5] [6]
    coords = torch.zeros(7, 5, dtype=torch.long)
    coords[:, 1] = torch.arange(7)
    layout = build_layout(coords, stride=3, cache=1)
    assert layout.plan.q_lengths.tolist() == [3, 3, 1]
    assert layout.plan.k_lengths.tolist() == [3, 4, 2]  # later tiles also see the frame before them
    assert layout.positions[:, 0].tolist() == [0, 1, 2, 1, 2, 3, 1]
    key_frames = coords[layout.order][layout.plan.key_index, 1]
    assert sorted(key_frames[3:7].tolist()) == [2, 3, 4, 5] and sorted(key_frames[7:].tolist()) == [5, 6]
    cache_rows = key_frames == 2
    assert layout.key_positions[3:][cache_rows[3:], 0].tolist() == [0.0]
    # without a cache, tiles of 4 frames are independent and re-based to t = 0
    plain = build_layout(coords, stride=4)
    assert plain.plan.key_index is None and plain.positions[:, 0].tolist() == [0, 1, 2, 3, 0, 1, 2]


def test_smooth_patch_borders_softens_only_the_steps_across_patch_borders():
    from atoken_diffusers.tokens.patchify import smooth_patch_borders

    torch.manual_seed(0)
    x = torch.randn(2, 3, 3, 4).repeat_interleave(16, -2).repeat_interleave(16, -1)  # blocky: steps only at borders
    assert smooth_patch_borders(x, (16, 16), 0.0) is x
    for s in (0.1, 0.5):
        y = smooth_patch_borders(x, (16, 16), s)
        for r in (16, 32):  # across row borders, away from the column borders
            step = lambda t: t[..., r, 1:15] - t[..., r - 1, 1:15]  # noqa: E731
            torch.testing.assert_close(step(y), (1 - 2 * s) * step(x))
        inside = torch.ones(48, 64, dtype=torch.bool)
        inside[[0, 15, 16, 31, 32, 47]] = False
        inside[:, [0, 15, 16, 31, 32, 47, 48, 63]] = False
        assert torch.equal(y[..., inside], x[..., inside])  # no pixel away from the borders moves
        torch.testing.assert_close(y.sum(), x.sum())            # each pair keeps its mean


def test_deblock_strength_filters_the_decoded_pixels():
    from atoken_diffusers import AutoencoderAToken
    from atoken_diffusers.tokens.patchify import smooth_patch_borders

    torch.manual_seed(0)
    model = AutoencoderAToken.from_preset("tiny").eval()
    z = torch.randn(1, model.config.latent_channels, 3, 2)
    with torch.no_grad():
        plain = model.decode(z).sample
        model.register_to_config(deblock_strength=0.25)
        torch.testing.assert_close(model.decode(z).sample, smooth_patch_borders(plain, (16, 16), 0.25))
    with pytest.raises(ValueError, match="deblock_strength"):
        AutoencoderAToken.from_preset("tiny", deblock_strength=0.7)
