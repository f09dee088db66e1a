"""Turn the ``losses`` section of a training config into the loss module and the frozen text tower."""

from __future__ import annotations

from ..losses.gram import GramLoss
from ..losses.lpips import LPIPS
from ..losses.recipe import ATokenLoss
from ..losses.vgg import VGGFeatures
from ..losses.vision_tower import FeaturePerceptualLoss, FrozenVisionTower
from .config import LossConfig


def _weights(value: str | None):
    """Config value -> weights argument: a path, None for random weights ("random", tests only)."""
    return None if value == "random" else value


def build_loss(cfg: LossConfig) -> ATokenLoss:
    """The :class:`ATokenLoss` of a ``losses`` section, its frozen networks loaded from local files."""
    if cfg.lpips_vgg and cfg.lpips_vgg != "random" and not cfg.lpips_heads:
        raise ValueError("losses.lpips_heads is not set: LPIPS with a real VGG16 needs the LPIPS head file (vgg.pth); "
                         "random heads would silently change the loss.")
    lpips = LPIPS(_weights(cfg.lpips_vgg), _weights(cfg.lpips_heads)) if cfg.lpips_vgg else None
    gram = GramLoss(VGGFeatures("vgg19", cfg.gram_layers, weights=_weights(cfg.gram_vgg))) if cfg.gram_vgg else None
    feature = FeaturePerceptualLoss(FrozenVisionTower.from_pretrained(cfg.feature_model, cfg.perceptual_size)) \
        if cfg.feature_model else None
    teacher = FrozenVisionTower.from_pretrained(cfg.teacher, cfg.perceptual_size) if cfg.teacher else None
    if teacher is not None and not cfg.text_model:
        raise ValueError("losses.teacher needs losses.text_model (distillation compares image-text logits).")
    return ATokenLoss(cfg, lpips=lpips, gram=gram, feature=feature, teacher=teacher)


def build_text_tower(cfg: LossConfig, device):
    """The frozen SigLIP text tower that embeds captions, or None when ``losses.text_model`` is unset."""
    if not cfg.text_model:
        return None
    from ..understanding.text import TextTower

    return TextTower.from_pretrained(cfg.text_model, device=device)
