"""What the class-conditional image pipelines (DiT and AR) share: the VAE's scale factor and class-name lookups."""

from __future__ import annotations

from ..inputs import resolve_class_labels


class ClassConditionalImageMixin:
    """For a ``DiffusionPipeline`` with ``vae`` (an AToken) and ``transformer`` (with ``class_names`` and
    ``num_classes`` in its config)."""

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell along a side, read from the VAE (16 for AToken)."""
        return self.vae.spatial_compression_ratio

    @property
    def class_names(self) -> list[str]:
        return list(self.transformer.config.class_names or [])

    def get_label_ids(self, names: str | list[str]) -> list[int]:
        """Class ids of class names (as in diffusers' DiTPipeline)."""
        cfg = self.transformer.config
        return resolve_class_labels([names] if isinstance(names, str) else names, cfg.num_classes,
                                    cfg.class_names).tolist()
