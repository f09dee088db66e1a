"""Training losses."""

from .siglip import siglip_sigmoid_loss

__all__ = ["siglip_sigmoid_loss"]
