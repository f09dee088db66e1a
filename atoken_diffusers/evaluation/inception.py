"""The Inception-v3 variant that FID is defined with (the 2015-12-05 TensorFlow graph, as ported to PyTorch).

The weights are the standard ``pt_inception-2015-12-05-6726825d.pth`` file that pytorch-fid and torch-fidelity use:
a state dict in torchvision's ``Inception3`` layout (``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.
running_mean``, ..., ``fc.weight`` of 1008 classes, no auxiliary head). It loads here with strict key checking.

The TensorFlow graph differs from torchvision's network in its pooling branches: the average pools leave padding
out of the mean, and the last block (``Mixed_7c``) max-pools. Features are the 2048 channels after the global
average pool (the "pool3" layer of FID), computed on images resized to 299 x 299 (bilinear).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FID_INPUT_SIZE = 299
FID_FEATURES = 2048
FID_CLASSES = 1008  # the 2015 graph's classifier (1000 ImageNet classes + 8 unused); kept so the file loads strictly


class ConvBN(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3, the TensorFlow graph's), ReLU: names ``conv`` and ``bn``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _pool_branch(x: torch.Tensor, pool: str) -> torch.Tensor:
    """3 x 3, stride 1 pooling that keeps the size: an average that ignores the padding, or a max."""
    if pool == "max":
        return F.max_pool2d(x, 3, stride=1, padding=1)
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    """35 x 35 block: 1x1, 5x5, double 3x3 and pooled branches -> 224 + ``pool_channels`` channels."""

    def __init__(self, in_channels: int, pool_channels: int):
        super().__init__()
        self.branch1x1 = ConvBN(in_channels, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = ConvBN(in_channels, 48, 1), ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2, self.branch3x3dbl_3 = ConvBN(64, 96, 3, padding=1), ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(in_channels, pool_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_pool_branch(x, "avg"))], 1)


class ReductionB(nn.Module):
    """35 -> 17 reduction: strided 3x3, strided double 3x3 and a max pool -> 480 + ``in_channels`` channels."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = ConvBN(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2, self.branch3x3dbl_3 = ConvBN(64, 96, 3, padding=1), ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


def _factorised_7x7(in_channels: int, mid: int, out: int, steps: int) -> list[ConvBN]:
    """A 1x1 then ``steps`` alternating 1x7 / 7x1 convolutions (7x1 / 1x7 when ``steps`` is 4: the double branch)."""
    convs = [ConvBN(in_channels, mid, 1)]
    wide_first = steps == 2
    for i in range(steps):
        horizontal = (i % 2 == 0) == wide_first
        kernel, padding = ((1, 7), (0, 3)) if horizontal else ((7, 1), (3, 0))
        convs.append(ConvBN(mid, out if i == steps - 1 else mid, kernel, padding=padding))
    return convs


class BlockC(nn.Module):
    """17 x 17 block with factorised 7x7 convolutions of ``mid`` channels -> 768 channels."""

    def __init__(self, in_channels: int, mid: int):
        super().__init__()
        self.branch1x1 = ConvBN(in_channels, 192, 1)
        for i, conv in enumerate(_factorised_7x7(in_channels, mid, 192, 2), 1):
            setattr(self, f"branch7x7_{i}", conv)
        for i, conv in enumerate(_factorised_7x7(in_channels, mid, 192, 4), 1):
            setattr(self, f"branch7x7dbl_{i}", conv)
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def _chain(self, prefix: str, count: int, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, count + 1):
            x = getattr(self, f"{prefix}_{i}")(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1x1(x), self._chain("branch7x7", 3, x), self._chain("branch7x7dbl", 5, x),
                          self.branch_pool(_pool_branch(x, "avg"))], 1)


class ReductionD(nn.Module):
    """17 -> 8 reduction: strided 3x3, a 7x7-then-strided-3x3 branch and a max pool -> 512 + ``in_channels``."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = ConvBN(in_channels, 192, 1), ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(in_channels, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class BlockE(nn.Module):
    """8 x 8 block with split 1x3 / 3x1 outputs -> 2048 channels; ``pool`` is "avg" (Mixed_7b) or "max" (Mixed_7c)."""

    def __init__(self, in_channels: int, pool: str):
        super().__init__()
        self.pool = pool
        self.branch1x1 = ConvBN(in_channels, 320, 1)
        self.branch3x3_1 = ConvBN(in_channels, 384, 1)
        self.branch3x3_2a, self.branch3x3_2b = ConvBN(384, 384, (1, 3), padding=(0, 1)), ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1, self.branch3x3dbl_2 = ConvBN(in_channels, 448, 1), ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
                          self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd),
                          self.branch_pool(_pool_branch(x, self.pool))], 1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 as FID defines it; ``forward`` maps images to the 2048 pool3 features.

    Args:
        input_size: the side inputs are resized to: 299 for FID; smaller sides (>= 75) only to test quickly.

    Attributes:
        num_features: 2048 (read by torchmetrics' FrechetInceptionDistance).
    """

    num_features = FID_FEATURES

    def __init__(self, input_size: int = FID_INPUT_SIZE):
        super().__init__()
        self.input_size = input_size
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = BlockA(192, 32), BlockA(256, 64), BlockA(288, 64)
        self.Mixed_6a = ReductionB(288)
        self.Mixed_6b, self.Mixed_6c = BlockC(768, 128), BlockC(768, 160)
        self.Mixed_6d, self.Mixed_6e = BlockC(768, 160), BlockC(768, 192)
        self.Mixed_7a = ReductionD(768)
        self.Mixed_7b, self.Mixed_7c = BlockE(1280, "avg"), BlockE(2048, "max")
        self.fc = nn.Linear(FID_FEATURES, FID_CLASSES)  # unused by FID; present in the weights file
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> FIDInceptionV3:
        return super().train(False)  # batch norm always uses its running statistics

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [-1, 1] -> (B, 2048) features (inputs resized to 299 x 299, bilinear)."""
        x = F.interpolate(x.float(), size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
                     "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        return x.mean(dim=(2, 3))
