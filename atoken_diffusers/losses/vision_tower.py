"""A frozen transformers vision tower (CLIP, SigLIP or SigLIP2) from a local folder: the CLIP-feature perceptual loss
reads its patch features and the semantic distillation its pooled embedding.

Images arrive in [-1, 1] and are resized to ``image_size`` (224 in the AToken recipe); SigLIP2 (NaFlex) models get
their patch-sequence inputs built here (patches flattened as (row, column, channel), all positions valid).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..tokens.patchify import patchify

_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def siglip2_patches(images: torch.Tensor, patch: int) -> dict[str, torch.Tensor]:
    """(B, 3, H, W) images in [-1, 1] -> ``Siglip2VisionModel`` keyword inputs (H, W multiples of ``patch``)."""
    b, c, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"images of {h}x{w} are not a multiple of the SigLIP2 patch {patch}; resize first.")
    nh, nw = h // patch, w // patch
    values = patchify(images[:, :, None], (1, patch, patch)).reshape(b, nh * nw, patch * patch * c)
    return dict(
        pixel_values=values,
        pixel_attention_mask=torch.ones(b, nh * nw, dtype=torch.long, device=images.device),
        spatial_shapes=torch.tensor([[nh, nw]] * b, device=images.device),
    )


class FrozenVisionTower(nn.Module):
    """Args:
    model: a transformers ``CLIPVisionModel``/``SiglipVisionModel``/``Siglip2VisionModel`` (or a full CLIP/SigLIP
        model, whose vision half is used).
    image_size: side the images are resized to.
    """

    def __init__(self, model: nn.Module, image_size: int = 224):
        super().__init__()
        self.model = getattr(model, "vision_model", model)
        self.model_type = model.config.model_type
        self.image_size = image_size
        self.patch = getattr(getattr(model.config, "vision_config", model.config), "patch_size", 16)
        normalise = "clip" in self.model_type
        self.register_buffer("mean", torch.tensor(_CLIP_MEAN if normalise else (0.5,) * 3).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_CLIP_STD if normalise else (0.5,) * 3).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    @classmethod
    def from_pretrained(cls, path: str | Path, image_size: int = 224, torch_dtype=None) -> "FrozenVisionTower":
        """Load from a local folder (never a hub)."""
        from transformers import AutoConfig, AutoModel

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"vision model path {str(path)!r} has no config.json; pass a local CLIP/SigLIP folder.")
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        import transformers

        vision_only = {"siglip_vision_model": "SiglipVisionModel", "siglip2_vision_model": "Siglip2VisionModel",
                       "clip_vision_model": "CLIPVisionModel"}
        cls_ = getattr(transformers, vision_only[config.model_type]) if config.model_type in vision_only else AutoModel
        return cls(cls_.from_pretrained(path, local_files_only=True, dtype=torch_dtype), image_size)

    def train(self, mode: bool = True) -> "FrozenVisionTower":
        return super().train(False)

    def forward(self, images: torch.Tensor):
        """(B, 3, H, W) in [-1, 1] -> (patch features (B, N, D), pooled embedding (B, D))."""
        x = F.interpolate(images.float(), size=(self.image_size,) * 2, mode="bilinear", align_corners=False, antialias=True)
        x = ((x + 1) / 2 - self.mean) / self.std
        x = x.to(next(self.model.parameters()).dtype)
        if "siglip2" in self.model_type:
            out = self.model(**siglip2_patches(x, self.patch))
        else:
            out = self.model(pixel_values=x)
        return out.last_hidden_state, out.pooler_output


class FeaturePerceptualLoss(nn.Module):
    """CLIP-feature perceptual loss: mean squared distance between the tower's patch features of the
    reconstruction and of the target."""

    def __init__(self, tower: FrozenVisionTower):
        super().__init__()
        self.tower = tower

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_feats = self.tower(target)[0]
        return F.mse_loss(self.tower(reconstruction)[0].float(), target_feats.float())
