"""Training losses of the AToken recipe (DESIGN section 8) and the frozen networks they use."""

from .distillation import distillation_loss
from .gram import GramLoss, gram_distance, gram_matrix
from .lpips import LPIPS
from .recipe import ATokenLoss, LossWeights, gaussian_kl
from .siglip import siglip_sigmoid_loss
from .vgg import VGGFeatures
from .vision_tower import FeaturePerceptualLoss, FrozenVisionTower, siglip2_patches

__all__ = [
    "ATokenLoss", "FeaturePerceptualLoss", "FrozenVisionTower", "GramLoss", "LPIPS", "LossWeights", "VGGFeatures",
    "distillation_loss", "gaussian_kl", "gram_distance", "gram_matrix", "siglip2_patches", "siglip_sigmoid_loss",
]
