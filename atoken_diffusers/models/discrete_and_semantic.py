"""What AutoencoderAToken gives besides reconstructions: discrete FSQ tokens (:class:`DiscreteTokensMixin`) and
semantic features of the encoder (:class:`SemanticFeaturesMixin`). Both run the model's own dense encode path;
they live here to keep the autoencoder's file about encoding and decoding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.utils.accelerate_utils import apply_forward_hook

from ..quantizers.fsq import FSQ
from ..tokens.patchify import LATENT_PATCH, pad_to_patches, tokens_to_grid
from ..utils.validation import check_indices


class DiscreteTokensMixin:
    """``tokenize`` / ``detokenize`` for models with an FSQ quantizer (``use_quantizer=True``, e.g. So/D)."""

    def _require_quantizer(self) -> FSQ:
        if self.quantizer is None:
            raise ValueError(
                "This model has no FSQ quantizer (config use_quantizer=False). Load an FSQ checkpoint such as So/D "
                "(preset 'so-d'), or construct the model with use_quantizer=True."
            )
        return self.quantizer

    @torch.no_grad()
    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """Discrete FSQ indices of images (B, codebooks, h, w) or videos (B, codebooks, t, h, w), int64."""
        fsq = self._require_quantizer()
        mean = self.encode(x).latent_dist.mode()
        return fsq.quantize_channels_first(mean)[1]

    def detokenize(self, indices: torch.Tensor) -> torch.Tensor:
        """FSQ indices -> latents (B, C, h, w) / (B, C, t, h, w) to pass to :meth:`decode`."""
        fsq = self._require_quantizer()
        check_indices(indices, fsq.num_codebooks, fsq.codebook_size)
        return fsq.indices_to_codes_channels_first(indices).to(self.dtype)


class SemanticFeaturesMixin:
    """Pooled embeddings (zero-shot classification, retrieval) and dense encoder features (a multimodal LLM's
    input) of images or videos in [-1, 1]."""

    def _encode_dense_hidden(self, x: torch.Tensor):
        clip, is_image = self._as_clip(x)
        hidden, layout, grid = self._clip_hidden(pad_to_patches(clip, self.patch_size))
        return hidden, layout, grid, is_image

    @apply_forward_hook
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised pooled semantic embedding (B, encoder_dim) of images or videos (all frames pooled)."""
        hidden, layout, _, _ = self._encode_dense_hidden(x)
        return F.normalize(self.encoder.embed(hidden, layout), dim=-1)

    @apply_forward_hook
    def encode_features(self, x: torch.Tensor) -> torch.Tensor:
        """Dense encoder features after the final LayerNorm, before the latent projection (what a multimodal LLM
        consumes): (B, encoder_dim, h, w) for images, (B, encoder_dim, t, h, w) for videos."""
        hidden, layout, grid, is_image = self._encode_dense_hidden(x)
        feats = tokens_to_grid(hidden, grid, LATENT_PATCH)
        return feats[:, :, 0] if is_image else feats
