"""Condition images of image-to-3D: checked, resized to a square and turned into AToken encoder tokens.

An image may be a PIL image, an image file path, an (H, W[, C]) uint8 or [0, 1] float array, or a (3, H, W) /
(B, 3, H, W) float tensor in [0, 1]; lists of those make a batch. It is resized (shorter side, bicubic) and centre
cropped to ``size`` pixels, mapped to [-1, 1] and encoded by the AToken encoder: the condition is its
(B, (size/16)^2, encoder_dim) final-LayerNorm features (:meth:`AutoencoderAToken.encode_features`).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ...utils.media import resize_centre_crop


def _not_an_image(image, name: str, why: str = "") -> TypeError:
    shape = f" of shape {tuple(image.shape)}" if hasattr(image, "shape") else ""
    return TypeError(f"{name} must be an image: a PIL image, an image file path, an (H, W, 3) array or a float "
                     f"(3, H, W) / (B, 3, H, W) tensor in [0, 1] (or a list of them); got {type(image).__name__}"
                     f"{shape}{why}.")


def _square(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, 3, size, size): shorter side to ``size`` (bicubic, antialiased), centre crop."""
    return resize_centre_crop(x, size).clamp(0, 1)


def image_tensor(image, name: str = "image") -> torch.Tensor:
    """One image (or a tensor batch) -> (B, 3, H, W) float in [0, 1]; errors name ``name``."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        if not os.path.isfile(image):
            raise FileNotFoundError(f"{name} file {image} does not exist.")
        try:
            with Image.open(image) as im:
                image = im.convert("RGB")
        except Exception as err:
            raise _not_an_image(image, name, f" ({os.fspath(image)} is not a readable image: {err})") from None
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.stack([image] * 3, -1)
        if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
            raise _not_an_image(image, name)
        arr = image[..., :3] if image.shape[-1] != 1 else np.repeat(image, 3, -1)
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float32) / 255
        elif not np.issubdtype(arr.dtype, np.floating):
            raise _not_an_image(image, name, " (arrays must be uint8 or float)")
        image = torch.from_numpy(np.ascontiguousarray(arr)).float().permute(2, 0, 1)
    if not isinstance(image, torch.Tensor):
        raise _not_an_image(image, name)
    if not image.is_floating_point() or image.ndim not in (3, 4) or image.shape[-3] != 3:
        raise _not_an_image(image, name)
    x = image[None] if image.ndim == 3 else image
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or Inf values.")
    if x.min() < -1e-3 or x.max() > 1 + 1e-3:
        raise ValueError(f"{name} values must lie in [0, 1]; got [{x.min().item():.3g}, {x.max().item():.3g}] (divide "
                         "uint8 tensors by 255).")
    return x.float().clamp(0, 1)


def load_condition_images(image, size: int, name: str = "image") -> torch.Tensor:
    """(B, 3, size, size) in [0, 1] from one image or a list of images (see the module doc)."""
    if image is None:
        raise ValueError(f"{name} is required: pass the picture of the object to generate.")
    items = image if isinstance(image, (list, tuple)) else [image]
    if not items:
        raise ValueError(f"{name} is an empty list; pass at least one image.")
    return torch.cat([_square(image_tensor(item, name), size) for item in items])


@torch.no_grad()
def image_tokens(vae, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) images in [0, 1] -> (B, (S/16)^2, encoder_dim) AToken encoder features (float32)."""
    feats = vae.encode_features((images * 2 - 1).to(vae.device, vae.dtype))  # (B, D, h, w)
    return feats.flatten(2).transpose(1, 2).float()
