"""The I3D video network (Inflated Inception-v1, Kinetics-400) whose logits FVD compares.

The weights are the PyTorch port of DeepMind's Kinetics-400 RGB checkpoint (the ``rgb_imagenet.pt`` state dict of
the widely used ``pytorch-i3d`` port): keys ``Conv3d_1a_7x7.conv3d.weight``, ``Conv3d_1a_7x7.bn.running_mean``,
``Mixed_3b.b1b.conv3d.weight``, ..., ``logits.conv3d.weight`` / ``.bias`` (400 classes). It loads here with strict
key checking. Convolutions and max pools pad like TensorFlow's "SAME" (more padding after than before when odd), as
the original graph did.

Features for FVD are the 400 logits of clips resized to 224 x 224 with values in [-1, 1]; the final average pool is
global over time and space (the original's 2 x 7 x 7 pool gives the same single cell for 16-frame 224-px clips, and
this one also accepts shorter or smaller clips).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FVD_INPUT_SIZE = 224
KINETICS_CLASSES = 400

# Inception modules: name, input channels, (1x1, 3x3 reduce, 3x3, 3x3 reduce, 3x3, pool projection); "pool:" entries
# are the same-padded max pools between them (kernel and stride per (t, h, w)).
_LAYOUT = [
    ("pool:MaxPool3d_2a_3x3", (1, 3, 3), (1, 2, 2)),
    ("Conv3d_2b_1x1", 64, 64, 1),
    ("Conv3d_2c_3x3", 64, 192, 3),
    ("pool:MaxPool3d_3a_3x3", (1, 3, 3), (1, 2, 2)),
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("pool:MaxPool3d_4a_3x3", (3, 3, 3), (2, 2, 2)),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("pool:MaxPool3d_5a_2x2", (2, 2, 2), (2, 2, 2)),
    ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
]


def same_padding(size: torch.Size, kernel: tuple, stride: tuple) -> tuple[int, ...]:
    """F.pad amounts (w, h, t order) for TensorFlow "SAME" padding of a (..., T, H, W) input."""
    pads = []
    for n, k, s in zip(size[-3:], kernel, stride):
        total = max(k - (s if n % s == 0 else n % s), 0)
        pads.append((total // 2, total - total // 2))
    return tuple(p for pair in reversed(pads) for p in pair)


class Unit3D(nn.Module):
    """Same-padded 3D convolution (``conv3d``) with optional batch norm (``bn``, eps 1e-3) and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int | tuple = 1, stride: int | tuple = 1,
                 batch_norm: bool = True, relu: bool = True, bias: bool = False):
        super().__init__()
        self.kernel = (kernel,) * 3 if isinstance(kernel, int) else tuple(kernel)
        self.stride = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, stride=self.stride, bias=bias)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-3, momentum=0.01) if batch_norm else None
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(F.pad(x, same_padding(x.shape, self.kernel, self.stride)))
        x = self.bn(x) if self.bn is not None else x
        return F.relu(x) if self.relu else x


def same_max_pool(x: torch.Tensor, kernel: tuple, stride: tuple) -> torch.Tensor:
    """Max pool with "SAME" zero padding (inputs are ReLU outputs, so zero never wins over a real value)."""
    return F.max_pool3d(F.pad(x, same_padding(x.shape, kernel, stride)), kernel, stride)


class InceptionModule3D(nn.Module):
    """Four branches (1x1; 1x1 -> 3x3; 1x1 -> 3x3; 3x3 max pool -> 1x1) concatenated over channels."""

    def __init__(self, in_channels: int, widths: tuple[int, ...]):
        super().__init__()
        self.b0 = Unit3D(in_channels, widths[0])
        self.b1a, self.b1b = Unit3D(in_channels, widths[1]), Unit3D(widths[1], widths[2], 3)
        self.b2a, self.b2b = Unit3D(in_channels, widths[3]), Unit3D(widths[3], widths[4], 3)
        self.b3b = Unit3D(in_channels, widths[5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)),
                          self.b3b(same_max_pool(x, (3, 3, 3), (1, 1, 1)))], 1)


class I3D(nn.Module):
    """Inflated Inception-v1; ``forward`` maps clips to the 400 Kinetics logits (the FVD features).

    Args:
        input_size: frames are resized to this square side first (224, the FVD protocol; smaller only for tests).
    Attributes:
        num_features: 400 (read by torchmetrics' FrechetInceptionDistance, used here for FVD).
    """

    num_features = KINETICS_CLASSES

    def __init__(self, input_size: int = FVD_INPUT_SIZE):
        super().__init__()
        self.input_size = input_size
        self.Conv3d_1a_7x7 = Unit3D(3, 64, 7, stride=2)
        self.pools = {}
        for entry in _LAYOUT:
            name = entry[0]
            if name.startswith("pool:"):
                self.pools[name] = entry[1:]
            elif name.startswith("Conv3d"):
                setattr(self, name, Unit3D(entry[1], entry[2], entry[3]))
            else:
                setattr(self, name, InceptionModule3D(entry[1], entry[2]))
        self.logits = Unit3D(1024, KINETICS_CLASSES, batch_norm=False, relu=False, bias=True)
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> I3D:
        return super().train(False)  # batch norm always uses its running statistics

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) clips in [-1, 1] -> (B, 400) logits (frames resized to ``input_size``, bilinear)."""
        b, _, t = x.shape[:3]
        frames = x.float().transpose(1, 2).flatten(0, 1)
        frames = F.interpolate(frames, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
        x = frames.unflatten(0, (b, t)).transpose(1, 2)
        x = self.Conv3d_1a_7x7(x)
        for entry in _LAYOUT:
            name = entry[0]
            x = same_max_pool(x, *self.pools[name]) if name in self.pools else getattr(self, name)(x)
        x = F.adaptive_avg_pool3d(x, 1)
        return self.logits(x).flatten(1)
