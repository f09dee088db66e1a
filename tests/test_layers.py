"""The shared layers: one attention layer in its packed and dense layouts, the key/value cache, the block's flags, the
sin/cos embedding, shifted windows and the voxel-coordinate check."""

from __future__ import annotations

import math

import pytest
import torch

from atoken_diffusers.layers import (
    Attention,
    AttentionContext,
    AttentionPlan,
    KVCache,
    RotaryTables,
    TransformerBlock,
    run_blocks,
    sincos_position_embedding,
    window_partition,
)
from atoken_diffusers.utils.validation import check_voxel_coords

TOL = dict(atol=1e-5, rtol=1e-5)


def _line_rope(length: int, head_dim: int) -> RotaryTables:
    """Rotary tables of positions 0..length-1 along t."""
    positions = torch.zeros(length, 4)
    positions[:, 0] = torch.arange(length)
    return RotaryTables(positions, head_dim)


@pytest.mark.parametrize("chunks", [[1] * 7, [3, 1, 2, 1], [7]])
def test_cached_decoding_matches_full_causal_forward(chunks):
    torch.manual_seed(0)
    blocks = torch.nn.ModuleList(
        TransformerBlock(32, 4, 64, norm="rms", qk_norm=True, causal=True) for _ in range(2)).eval()
    x = torch.randn(2, sum(chunks), 32)
    rope = _line_rope(x.shape[1], 8)
    with torch.no_grad():
        full = run_blocks(blocks, x, AttentionContext(rope_q=rope, rope_k=rope))
        cache, start, steps = KVCache(x.shape[1], batch=2), 0, []
        for size in chunks:
            assert cache.length == start
            part = RotaryTables(torch.nn.functional.pad(torch.arange(start, start + size)[:, None].float(), (0, 3)), 8)
            steps.append(run_blocks(blocks, x[:, start:start + size], AttentionContext(rope_q=part, rope_k=part,
                                                                                        cache=cache)))
            start += size
    torch.testing.assert_close(torch.cat(steps, dim=1), full, **TOL)
    # Causality: changing the last position leaves every earlier output unchanged.
    x2 = x.clone()
    x2[:, -1] += 1
    with torch.no_grad():
        changed = run_blocks(blocks, x2, AttentionContext(rope_q=rope, rope_k=rope))
    torch.testing.assert_close(changed[:, :-1], full[:, :-1], **TOL)
    assert (changed[:, -1] - full[:, -1]).abs().max() > 1e-3


def test_kv_cache_errors():
    attn = Attention(16, 2, causal=True)
    cache = KVCache(3, batch=2)
    with torch.no_grad():
        attn(torch.randn(2, 3, 16), AttentionContext(cache=cache))
        with pytest.raises(ValueError, match="KV cache overflow: 4 positions > max_length 3"):
            attn(torch.randn(2, 1, 16), AttentionContext(cache=cache))
        cache.reset()
        assert cache.length == 0
        with pytest.raises(ValueError, match="holds 2 sequences but got keys of 1"):
            attn(torch.randn(1, 1, 16), AttentionContext(cache=cache))


@pytest.mark.parametrize("softcap", [None, 2.0])
def test_packed_matches_dense(softcap):
    """The same sequences, packed (N, dim) through an AttentionPlan or dense (B, S, dim) through SDPA."""
    torch.manual_seed(0)
    attn = Attention(32, 4, qk_norm=True, softcap=softcap).eval()
    x = torch.randn(3, 5, 32)
    rope = _line_rope(5, 8)
    packed_rope = _line_rope(5, 8)
    packed_rope.cos, packed_rope.sin = packed_rope.cos.repeat(3, 1, 1), packed_rope.sin.repeat(3, 1, 1)
    with torch.no_grad():
        dense = attn(x, AttentionContext(rope_q=rope, rope_k=rope))
        plan = AttentionPlan(torch.full((3,), 5))
        packed = attn(x.flatten(0, 1), AttentionContext(plan, rope_q=packed_rope, rope_k=packed_rope))
    torch.testing.assert_close(packed.view(3, 5, 32), dense, **TOL)


def test_packed_groups_of_different_lengths_match_one_by_one():
    torch.manual_seed(0)
    attn = Attention(16, 2, bias=False).eval()
    lengths = [4, 1, 6]
    x = torch.randn(sum(lengths), 16)
    with torch.no_grad():
        packed = attn(x, AttentionContext(AttentionPlan(torch.tensor(lengths))))
        alone = [attn(part[None], AttentionContext())[0] for part in x.split(lengths)]
    torch.testing.assert_close(packed, torch.cat(alone), **TOL)


def test_cross_attention_packed_matches_dense_and_window_order_is_undone():
    torch.manual_seed(0)
    cross = Attention(16, 2, context_dim=12, qk_norm=True).eval()
    x, context = torch.randn(2, 3, 16), torch.randn(2, 5, 12)
    with torch.no_grad():
        dense = cross(x, AttentionContext(), context)
        plan = AttentionPlan(torch.tensor([3, 3]), torch.tensor([5, 5]))
        packed = cross(x.flatten(0, 1), AttentionContext(cross_plan=plan), context.flatten(0, 1))
    torch.testing.assert_close(packed.view(2, 3, 16), dense, **TOL)
    with pytest.raises(ValueError, match="needs context"):
        cross(x, AttentionContext())
    # A permutation into self-attention groups is applied and undone inside the layer.
    attn = Attention(16, 2).eval()
    tokens = torch.randn(6, 16)
    order = torch.tensor([4, 0, 2, 5, 1, 3])
    with torch.no_grad():
        permuted = attn(tokens, AttentionContext(AttentionPlan(torch.tensor([3, 3])), order=order,
                                                 inverse=torch.argsort(order)))
        direct = attn(tokens[order], AttentionContext(AttentionPlan(torch.tensor([3, 3]))))
    torch.testing.assert_close(permuted[order], direct, **TOL)


def test_modulated_block_starts_as_identity_and_cross_attention_contributes():
    torch.manual_seed(0)
    block = TransformerBlock(16, 2, 32, modulation=True)
    assert not [n for n, _ in block.named_parameters() if n.startswith(("norm1", "norm2"))]  # adaLN: no affine
    x, emb = torch.randn(2, 4, 16), torch.randn(2, 16)
    torch.testing.assert_close(block(x, AttentionContext(), emb), x)
    with pytest.raises(ValueError, match="needs emb"):
        block(x, AttentionContext())
    crossing = TransformerBlock(16, 2, 32, context_dim=8, modulation=True)
    out = crossing(x, AttentionContext(), emb, torch.randn(2, 3, 8))
    assert (out - x).abs().max() > 1e-3  # only the cross-attention path is not gated


def test_sincos_position_embedding_values():
    positions = torch.tensor([[0, 1, 63]])
    emb = sincos_position_embedding(positions, 20)  # 3 axes x 2 x 3 frequencies = 18, padded to 20
    assert emb.shape == (1, 20) and emb.dtype == torch.float32
    freqs = 1.0 / 10000 ** (torch.arange(3) / 3)
    for axis, p in enumerate([0, 1, 63]):
        torch.testing.assert_close(emb[0, axis * 6: axis * 6 + 3], torch.sin(p * freqs))
        torch.testing.assert_close(emb[0, axis * 6 + 3: axis * 6 + 6], torch.cos(p * freqs))
    assert (emb[0, 18:] == 0).all()
    with pytest.raises(ValueError, match="dim \\(4\\) must be at least 6"):
        sincos_position_embedding(positions, 4)


@pytest.mark.parametrize("shift", [0, 2])
def test_window_partition_groups_each_samples_windows(shift):
    torch.manual_seed(0)
    xyz = torch.randint(0, 16, (200, 3))
    batch = torch.randint(0, 3, (200,)).sort().values
    order, inverse, plan = window_partition(batch, xyz, 4, shift, 16)
    torch.testing.assert_close(order[inverse], torch.arange(200))
    window_id = torch.cat([batch[:, None], (xyz + shift) // 4], dim=1)[order]
    starts = torch.nn.functional.pad(plan.q_lengths.cumsum(0), (1, 0))
    for g in range(plan.num_groups):
        members = window_id[starts[g]:starts[g + 1]]
        assert (members == members[0]).all()  # one sample, one window
    assert torch.unique(window_id, dim=0).shape[0] == plan.num_groups  # every window exactly once
    assert int(plan.q_lengths.max()) <= math.prod([4, 4, 4])


def test_check_voxel_coords_messages():
    good = torch.tensor([[0, 1, 2, 3], [1, 0, 0, 63]])
    check_voxel_coords(good, 64, rows=2, batch=2)
    cases = [
        (good[:, 1:], ValueError, r"\(batch, x, y, z\).*Prepend the batch index"),
        (good.float(), TypeError, "coords must be an integer tensor"),
        (good + torch.tensor([0, 0, 0, 1]), ValueError, r"coords x, y, z must lie in \[0, 64\) \(resolution\); got "
                                                        r"\[0, 64\]"),
        (good - torch.tensor([1, 0, 0, 0]), ValueError, r"coords batch indices must lie in \[0, 2\)"),
    ]
    for coords, error, message in cases:
        with pytest.raises(error, match=message):
            check_voxel_coords(coords, 64, rows=2, batch=2)
    with pytest.raises(ValueError, match="coords has 2 rows but feats has 3"):
        check_voxel_coords(good, 64, rows=3)
    with pytest.raises(ValueError, match=r"batch indices \(column 0\) must be >= 0"):
        check_voxel_coords(good - torch.tensor([1, 0, 0, 0]), 64)
