"""The learned 2D position table, resized to each sample's (and each temporal tile's) token extent.

The table holds grid x grid vectors (16 x 16 for AToken), row-major with rows along x (image height). For every group
of tokens it is resized with antialiased bilinear interpolation (align_corners off, float32) to
(max x + 1, max y + 1) of that group, and token (x, y) reads entry [x, y]. There is no temporal or depth table:
t and z only enter through RoPE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LearnedPositionTable(nn.Module):
    def __init__(self, dim: int, grid: int = 16):
        super().__init__()
        self.grid = grid
        self.weight = nn.Parameter(torch.zeros(grid * grid, dim))

    def _axis_weights(self, length: int) -> torch.Tensor:
        """(length, grid) interpolation weights of one axis. The antialiased bilinear resize is separable, so
        resizing the identity matrix along its rows (columns kept) gives the weight each output row takes from each
        input row. Resizing to ``grid`` gives exactly the identity, and there is no branch on the size (a branch
        would make it a guard under torch.compile / torch.export with dynamic shapes)."""
        g = self.grid
        eye = torch.eye(g, device=self.weight.device)[None, None]
        return F.interpolate(eye, size=(length, g), mode="bilinear", align_corners=False, antialias=True)[0, 0]

    def resized(self, height: int, width: int, window: tuple[int, int, int, int] | None = None) -> torch.Tensor:
        """The table resized to (height, width), flattened to (height * width, dim) in float32.

        ``window`` (top, left, rows, cols) returns only that part of the resized table, (rows * cols, dim), without
        building the rest: a spatial tile of a huge image needs its own rows and columns, not a table the size of
        the image."""
        top, left, rows, cols = window if window is not None else (0, 0, height, width)
        g, dim = self.grid, self.weight.shape[1]
        row_weights = self._axis_weights(height)[top : top + rows]
        col_weights = self._axis_weights(width)[left : left + cols]
        table = self.weight.float().reshape(g, g, dim)
        return torch.einsum("ri,ijd,cj->rcd", row_weights, table, col_weights).reshape(rows * cols, dim)

    def forward(self, xy: torch.Tensor, group: torch.Tensor, group_sizes: torch.Tensor,
                size: tuple[int, int] | None = None,
                window: tuple[int, int, int, int] | None = None) -> torch.Tensor:
        """Position vectors of the tokens.

        Args:
            xy: (N, 2) integer (x, y) coordinates.
            group: (N,) group index of every token.
            group_sizes: (G, 2) the (height, width) each group resizes the table to.
            size: (height, width) shared by every group, when the caller knows it (dense grids): one resize and no
                look at ``group_sizes``' values (no host sync).
            window: (top, left, rows, cols) inside ``size`` that holds every token (a spatial tile): only that part
                of the table is built.
        Returns:
            (N, dim) float32.
        """
        if size is not None:
            top, left, _, cols = window if window is not None else (0, 0, *size)
            return self.resized(*size, window)[(xy[:, 0] - top) * cols + xy[:, 1] - left]
        # One interpolation per distinct size (usually one for a whole batch), then a single gather.
        sizes, size_of_group = torch.unique(group_sizes, dim=0, return_inverse=True)
        sizes_list = sizes.tolist()
        tables = [self.resized(h, w) for h, w in sizes_list]
        starts = torch.tensor([0] + [h * w for h, w in sizes_list[:-1]], device=xy.device).cumsum(0)
        size_id = size_of_group[group]
        width = sizes[size_id, 1]
        return torch.cat(tables)[starts[size_id] + xy[:, 0] * width + xy[:, 1]]
