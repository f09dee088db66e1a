"""Training :class:`ATokenARTransformer` on pre-encoded FSQ indices: teacher-forced cross-entropy over every codebook
index of every latent position, labels dropped with probability ``run.class_dropout`` for classifier-free guidance.

    from atoken_diffusers.generation import ARTrainer, GeneratorTrainConfig
    config = GeneratorTrainConfig.from_yaml(None, {"data.shards": "runs/shards", "run.output_dir": "runs/ar"})
    ARTrainer(config).train()           # -> runs/ar/pipeline
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..training.loop import GeneratorTrainer
from .ar_transformer import AR_PRESETS, ATokenARTransformer
from .pipeline_ar import ATokenARPipeline


class ARTrainer(GeneratorTrainer):
    def build_model(self) -> ATokenARTransformer:
        data = self.data
        if not data.has_indices:
            raise ValueError(f"the shards in {self.config.data.shards} hold no FSQ indices: encode the dataset with an "
                             "AToken model that has a quantizer (e.g. So/D).")
        if len(data.latent_shape) != 3:
            raise ValueError("the AR model generates images: use data.kind images.")
        _, h, w = data.latent_shape
        kwargs = dict(num_codebooks=data.model["num_codebooks"], codebook_size=data.model["codebook_size"],
                      sample_size=max(h, w), num_classes=data.num_classes, class_names=data.classes,
                      class_dropout_prob=self.config.run.class_dropout)
        kwargs.update(self.model_kwargs(AR_PRESETS))
        return ATokenARTransformer(**kwargs)

    def compute_loss(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        indices = batch["indices"]
        labels = self.drop_labels(batch["labels"], self.model.null_class, generator)
        logits = self.wrapped(indices, labels)  # (B, K, h, w, V)
        return F.cross_entropy(logits.flatten(0, -2).float(), indices.flatten())

    def build_pipeline(self, model: ATokenARTransformer) -> ATokenARPipeline:
        return ATokenARPipeline(transformer=model, vae=self.load_vae())
