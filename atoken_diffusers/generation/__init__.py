"""Generation on AToken latents: a flow-matching DiT over continuous latents, an autoregressive transformer over FSQ
indices, text-to-video through diffusers' Wan pipeline with AToken as the VAE, TRELLIS-style image-to-3D, their
diffusers pipelines, dataset pre-encoding into shards, latent statistics and training."""

from .ar_transformer import ATokenARTransformer
from .dit import ATokenDiT
from .encode_dataset import encode_dataset
from .image_to_3d import ATokenImageTo3DPipeline
from .latent_stats import denormalize_latents, latent_normalization, normalize_latents, write_latent_stats
from .pipeline_ar import ATokenARPipeline, ATokenARPipelineOutput
from .pipeline_dit import ATokenDiTPipeline
from .pipeline_wan import ATokenWanImageToVideoPipeline, ATokenWanPipeline
from .shards import LatentShards
from .train_ar import ARTrainer
from .train_config import GeneratorTrainConfig
from .train_dit import DiTTrainer
from .wan import build_wan_pipeline, decoded_num_frames, load_text_encoder

__all__ = [
    "ATokenImageTo3DPipeline", "ATokenWanImageToVideoPipeline", "ATokenWanPipeline", "build_wan_pipeline",
    "decoded_num_frames", "load_text_encoder",
    "ARTrainer", "ATokenARPipeline", "ATokenARPipelineOutput", "ATokenARTransformer", "ATokenDiT", "ATokenDiTPipeline",
    "DiTTrainer", "GeneratorTrainConfig", "LatentShards", "denormalize_latents", "encode_dataset",
    "latent_normalization", "normalize_latents", "write_latent_stats",
]
