"""Shifted 3D windows (Swin style): self-attention groups of the voxels/tokens of each sample's window^3 cubes."""

from __future__ import annotations

import torch

from .attention import AttentionPlan


def window_partition(batch: torch.Tensor, xyz: torch.Tensor, window: int, shift: int, resolution: int):
    """Group tokens by (sample, floor((xyz + shift) / window)).

    Args:
        batch: (N,) integer sample index of every token.
        xyz: (N, 3) integer positions in [0, resolution).
        window: side of the windows, in positions.
        shift: offset added to the positions before cutting (``window // 2`` on the shifted blocks).
        resolution: side of the grid; it sizes the window key, so nothing is read back from the data.
    Returns:
        ``order`` (N,) sorting the tokens window after window (sample-major), its inverse ``inverse`` (N,), and the
        :class:`AttentionPlan` of the sorted tokens.
    """
    cell = (xyz + shift) // window  # (N, 3), each in [0, per_axis)
    per_axis = (resolution + shift) // window + 1
    key = ((batch * per_axis + cell[:, 0]) * per_axis + cell[:, 1]) * per_axis + cell[:, 2]
    # Any order inside a window gives the same attention; stable sorting keeps runs reproducible.
    order = torch.argsort(key, stable=True)
    lengths = torch.unique_consecutive(key[order], return_counts=True)[1]
    return order, torch.argsort(order), AttentionPlan(lengths)
