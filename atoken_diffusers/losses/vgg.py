"""VGG16/VGG19 feature extractors in torchvision's layer layout, for the LPIPS and Gram-matrix losses.

The network is defined here (torchvision stays optional); weights come from a local file in torchvision's format
(``features.N.weight`` keys, ``.pth`` read with ``weights_only=True`` or ``.safetensors``). Without a file the weights
are random, which is only meant for tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

# torchvision's configurations: channels of each 3x3 conv, "M" for a 2x2 max-pool.
_CFGS = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _layers_and_names(cfg: Sequence) -> tuple[list[nn.Module], dict[str, int]]:
    """The ``features`` modules and a map from names like ``relu3_4`` / ``conv1_1`` to their indices."""
    layers, names, block, conv, channels = [], {}, 1, 0, 3
    for item in cfg:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
            block, conv = block + 1, 0
            continue
        conv += 1
        names[f"conv{block}_{conv}"] = len(layers)
        layers.append(nn.Conv2d(channels, item, 3, padding=1))
        names[f"relu{block}_{conv}"] = len(layers)
        layers.append(nn.ReLU(inplace=False))
        channels = item
    return layers, names


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a local ``.safetensors`` or PyTorch file (never unpickles arbitrary objects)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {str(path)!r} does not exist; pass a local file (no downloads).")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


class VGGFeatures(nn.Module):
    """Frozen VGG activations at named layers.

    Args:
        arch: ``"vgg16"`` or ``"vgg19"``.
        layers: names such as ``("relu1_2", "relu2_2")``; the network is cut after the deepest one.
        weights: a torchvision-format file, or None for random weights (tests only).
        imagenet_normalize: map inputs in [-1, 1] to ImageNet statistics (False: the caller normalises).
    """

    def __init__(self, arch: str = "vgg19", layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_4", "relu4_4", "relu5_4"),
                 weights: str | Path | None = None, imagenet_normalize: bool = True):
        super().__init__()
        if arch not in _CFGS:
            raise ValueError(f"arch must be one of {sorted(_CFGS)}; got {arch!r}.")
        modules, names = _layers_and_names(_CFGS[arch])
        unknown = [n for n in layers if n not in names]
        if unknown or not layers:
            raise ValueError(f"layers {unknown or list(layers)} are not {arch} layers; choose from {sorted(names)}.")
        self.taps = [names[n] for n in layers]
        self.features = nn.Sequential(*modules[: max(self.taps) + 1])
        self.imagenet_normalize = imagenet_normalize
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if weights is not None:
            state = {k.removeprefix("features."): v for k, v in read_weights(weights).items()
                     if not k.startswith("classifier")}
            wanted = self.features.state_dict()
            missing = [k for k in wanted if k not in state]
            if missing:
                raise ValueError(f"{weights}: not a torchvision {arch} file (missing {missing[:3]}).")
            self.features.load_state_dict({k: state[k] for k in wanted})
        self.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> "VGGFeatures":
        return super().train(False)  # frozen: never switch to training behaviour

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) images in [-1, 1] -> activations at the requested layers, in order."""
        if self.imagenet_normalize:
            x = ((x + 1) / 2 - self.mean) / self.std
        out, taps = [], set(self.taps)
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in taps:
                out.append(x)
        return out
