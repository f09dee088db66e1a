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

    def resized(self, height: int, width: int) -> torch.Tensor:
        """The table resized to (height, width), flattened to (height * width, dim) in float32."""
        g, dim = self.grid, self.weight.shape[1]
        table = self.weight.float().t().reshape(1, dim, g, g)
        # No branch on the size: resizing to (g, g) is exactly the identity, and a branch would make the size a
        # guard under torch.compile / torch.export with dynamic shapes.
        table = F.interpolate(table, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
        return table.reshape(dim, height * width).t()

    def forward(self, xy: torch.Tensor, group: torch.Tensor, group_sizes: torch.Tensor,
                size: tuple[int, int] | None = None) -> torch.Tensor:
        """Position vectors of the tokens.

        Args:
            xy: (N, 2) integer (x, y) coordinates.
            group: (N,) group index of every token.
            group_sizes: (G, 2) the (height, width) each group resizes the table to.
            size: (height, width) shared by every group, when the caller knows it (dense grids): one resize and no
                look at ``group_sizes``' values (no host sync).
        Returns:
            (N, dim) float32.
        """
        if size is not None:
            return self.resized(*size)[xy[:, 0] * size[1] + xy[:, 1]]
        # One interpolation per distinct size (usually one for a whole batch), then a single gather.
        sizes, size_of_group = torch.unique(group_sizes, dim=0, return_inverse=True)
        sizes_list = sizes.tolist()
        tables = [self.resized(h, w) for h, w in sizes_list]
        starts = torch.tensor([0] + [h * w for h, w in sizes_list[:-1]], device=xy.device).cumsum(0)
        size_id = size_of_group[group]
        width = sizes[size_id, 1]
        return torch.cat(tables)[starts[size_id] + xy[:, 0] * width + xy[:, 1]]
