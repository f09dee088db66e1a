"""Generation on AToken latents: a flow-matching DiT over continuous latents, an autoregressive transformer over FSQ
indices, their diffusers pipelines, dataset pre-encoding into shards, latent statistics and training."""

from .ar_transformer import ATokenARTransformer
from .dit import ATokenDiT
from .encode_dataset import encode_dataset
from .latent_stats import denormalize_latents, latent_normalization, normalize_latents, write_latent_stats
from .pipeline_ar import ATokenARPipeline, ATokenARPipelineOutput
from .pipeline_dit import ATokenDiTPipeline
from .shards import LatentShards
from .train_ar import ARTrainer
from .train_config import GeneratorTrainConfig
from .train_dit import DiTTrainer

__all__ = [
    "ARTrainer", "ATokenARPipeline", "ATokenARPipelineOutput", "ATokenARTransformer", "ATokenDiT", "ATokenDiTPipeline",
    "DiTTrainer", "GeneratorTrainConfig", "LatentShards", "denormalize_latents", "encode_dataset",
    "latent_normalization", "normalize_latents", "write_latent_stats",
]
