"""Temporal tiles: which tokens attend to which, and at what positions.

AToken's transformers never attend across samples, and never across temporal tiles except through the decoder's
optional key/value cache:

* Tiles are cut every ``stride`` latent frames, counted from the smallest t in the batch (4 latent frames = 16 video
  frames by default). The first tile's t is re-based to 0; a later tile starting at frame f is re-based by
  f - cache, so that the ``cache`` frames before it sit at t = 0 .. cache - 1.
* With a cache, a tile's keys/values also include the tokens of the ``cache`` latent frames just before it (the
  previous tile's last frames), taken from the same layer. Because every token's key/value at a layer depends only on
  its own tile's computation, all tiles can run in one pass with those tokens gathered in as extra keys; this gives
  the same result as the reference's tile-after-tile loop.
* The learned position table is resized per (sample, tile) to that group's (max x + 1, max y + 1).

:func:`build_layout` computes this once per forward pass, fully vectorised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..layers.attention import AttentionPlan


@dataclass(eq=False)
class TokenLayout:
    """Tokens sorted into (sample, tile) groups, with everything the transformer layers need.

    Attributes:
        order: (N,) input rows in group order; ``restore`` is its inverse.
        group: (N,) group id of every sorted token.
        group_sizes: (G, 2) (height, width) of the position table for each group.
        positions: (N, 4) tile-local RoPE positions (t, x, y, z) of the sorted tokens.
        key_positions: (Nk, 4) positions of the key entries (``positions`` when there is no cache).
        plan: the self-attention plan.
        tokens_per_sample: (B,) token counts per sample (sorted tokens are also sample after sample).
        table_size: (height, width) shared by all groups when known from shapes (dense grids), else None.
        table_window: (top, left, rows, cols) of ``table_size`` holding every token (a spatial tile), else None.
        order/restore are None when the input rows are already in group order (dense grids).
    """

    order: torch.Tensor | None
    restore: torch.Tensor | None
    group: torch.Tensor
    group_sizes: torch.Tensor
    positions: torch.Tensor
    key_positions: torch.Tensor
    plan: AttentionPlan
    tokens_per_sample: torch.Tensor
    table_size: tuple[int, int] | None = None
    table_window: tuple[int, int, int, int] | None = None

    def sort(self, rows: torch.Tensor) -> torch.Tensor:
        """Input-order rows -> group order."""
        return rows if self.order is None else rows[self.order]

    def unsort(self, rows: torch.Tensor) -> torch.Tensor:
        """Group-order rows -> input order."""
        return rows if self.restore is None else rows[self.restore]


def grid_layout(grid: tuple[int, int, int, int], stride: int = 4, offset: tuple[int, int] = (0, 0),
                extent: tuple[int, int] | None = None, device=None) -> TokenLayout:
    """The layout of a dense (B, t, h, w) token grid in row order (as :func:`~atoken_diffusers.tokens.patchify.
    grid_to_tokens` makes it), without a key/value cache: equal to ``build_layout`` of its coordinates, computed
    from the shape alone -- no look at tensor values, no host sync, one graph under ``torch.compile`` and
    ``torch.export`` (sizes may be symbolic).

    Args:
        grid: (B, t, h, w) tokens.
        stride: latent frames per temporal tile.
        offset: (rows, cols) of this grid inside a larger image (a spatial tile); coordinates are shifted by it.
        extent: (height, width) to resize the position table to (the whole image's, for a spatial tile); default
            (h, w).
    """
    b, t, h, w = grid
    if stride <= 0:
        raise ValueError(f"stride must be a positive number of latent frames; got {stride}.")
    tiles = [t] if t <= stride else [stride] * (t // stride) + ([t % stride] if t % stride else [])
    plan = AttentionPlan.from_lengths([n * h * w for n in tiles] * b, device=device)
    frames = torch.arange(t, device=device)
    rows, cols = torch.arange(h, device=device) + offset[0], torch.arange(w, device=device) + offset[1]
    shape = (b, t, h, w)
    local_t = (frames % stride).view(1, t, 1, 1).expand(shape)
    positions = torch.stack([local_t, rows.view(1, 1, h, 1).expand(shape), cols.view(1, 1, 1, w).expand(shape),
                             torch.zeros(shape, dtype=frames.dtype, device=device)], dim=-1).reshape(-1, 4).float()
    group = (torch.arange(b, device=device).view(b, 1) * len(tiles) + (frames // stride).view(1, t))
    group = group.view(b, t, 1, 1).expand(shape).reshape(-1)
    size = tuple(extent) if extent is not None else (h, w)
    group_sizes = torch.tensor(size, device=device).expand(b * len(tiles), 2)
    tokens_per_sample = torch.full((b,), t * h * w, device=device)
    window = (offset[0], offset[1], h, w)
    return TokenLayout(None, None, group, group_sizes, positions, positions, plan, tokens_per_sample, size, window)


def build_layout(
    coords: torch.Tensor, stride: int = 4, cache: int = 0, extent: tuple[int, int] | None = None
) -> TokenLayout:
    """Group tokens by (sample, temporal tile).

    Args:
        coords: (N, 5) integer (b, t, x, y, z); samples must be numbered 0..B-1.
        stride: latent frames per tile.
        cache: latent frames of the previous tile whose keys/values each later tile sees (0 = independent tiles).
        extent: (height, width) to resize the position table to for every group instead of the group's own
            (max x + 1, max y + 1): spatial tiles of a larger image use the whole image's extent, so every token
            keeps the position vector it has in an untiled pass.
    """
    if stride <= 0:
        raise ValueError(f"stride must be a positive number of latent frames; got {stride}.")
    if cache < 0:
        raise ValueError(f"cache must be >= 0 latent frames; got {cache}.")
    n = coords.shape[0]
    device = coords.device
    b, t = coords[:, 0], coords[:, 1]
    t0 = t.min()
    tile = (t - t0) // stride
    num_tiles = int(tile.max()) + 1
    group_key = b * num_tiles + tile
    group_keys, group_id = torch.unique(group_key, return_inverse=True)  # sorted: sample-major, then tile

    order = torch.argsort(group_id, stable=True)
    restore = torch.empty_like(order)
    restore[order] = torch.arange(n, device=device)
    c = coords[order]
    group, tile, b = group_id[order], tile[order], c[:, 0]

    num_groups = group_keys.shape[0]
    q_lengths = torch.bincount(group, minlength=num_groups)
    if extent is not None:
        group_sizes = torch.tensor(extent, device=device).expand(num_groups, 2)
    else:
        group_sizes = torch.zeros(num_groups, 2, dtype=torch.long, device=device).scatter_reduce(
            0, group[:, None].expand(-1, 2), c[:, 2:4] + 1, reduce="amax", include_self=False
        )

    def local_t(target_tile: torch.Tensor) -> torch.Tensor:
        start = t0 + target_tile * stride
        return c[:, 1] - torch.where(target_tile > 0, start - cache, start)

    positions = torch.stack([local_t(tile), c[:, 2], c[:, 3], c[:, 4]], dim=1).float()
    tokens_per_sample = torch.bincount(b, minlength=int(b.max()) + 1)

    if cache == 0:
        plan = AttentionPlan(q_lengths)
        key_positions = positions
    else:
        # Every token is a key of its own group, and of each later tile of its sample whose cache window reaches it.
        rows, groups, key_t = [torch.arange(n, device=device)], [group], [positions[:, 0]]
        for step in range(1, math.ceil(cache / stride) + 1):
            target = tile + step
            target_key = b * num_tiles + target
            target_group = torch.searchsorted(group_keys, target_key).clamp(max=num_groups - 1)
            ok = (group_keys[target_group] == target_key) & (target * stride <= c[:, 1] - t0 + cache)
            rows.append(torch.nonzero(ok).squeeze(1))
            groups.append(target_group[ok])
            key_t.append(local_t(target)[ok])
        key_group = torch.cat(groups)
        key_sort = torch.argsort(key_group, stable=True)
        key_index = torch.cat(rows)[key_sort]
        key_positions = torch.cat([torch.cat(key_t)[key_sort, None].float(), positions[key_index, 1:]], dim=1)
        plan = AttentionPlan(q_lengths, torch.bincount(key_group, minlength=num_groups), key_index)

    return TokenLayout(order, restore, group, group_sizes, positions, key_positions, plan, tokens_per_sample)
