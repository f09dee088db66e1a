"""Generation on AToken latents, grouped by family:

- ``image/``: a flow-matching DiT over continuous latents and an autoregressive transformer over FSQ indices, their
  pipelines and trainers;
- ``video/``: text-to-video (and Wan 2.1-style image-to-video) through diffusers' Wan pipeline with AToken as the VAE;
- ``three_d/``: TRELLIS-style image-to-3D (sparse structure, sparse latent flow, the pipeline and its trainer);
- ``data/``: dataset pre-encoding into shards, shard reading, latent statistics;
- ``training/``: the generator training loop and its config, shared by every family;
- ``inputs.py``: the argument checks every pipeline shares.
"""

from .data.encode_dataset import encode_dataset
from .data.latent_stats import denormalize_latents, latent_normalization, normalize_latents, write_latent_stats
from .data.shards import LatentShards
from .image.ar_transformer import ATokenARTransformer
from .image.dit import ATokenDiT
from .image.pipeline_ar import ATokenARPipeline, ATokenARPipelineOutput
from .image.pipeline_dit import ATokenDiTPipeline
from .image.train_ar import ARTrainer
from .image.train_dit import DiTTrainer
from .three_d.pipeline_image_to_3d import ATokenImageTo3DPipeline
from .training.config import GeneratorTrainConfig
from .video.geometry import decoded_num_frames
from .video.pipeline_wan import ATokenWanImageToVideoPipeline, ATokenWanPipeline
from .video.wan import build_wan_pipeline, load_text_encoder

__all__ = [
    "ATokenImageTo3DPipeline", "ATokenWanImageToVideoPipeline", "ATokenWanPipeline", "build_wan_pipeline",
    "decoded_num_frames", "load_text_encoder",
    "ARTrainer", "ATokenARPipeline", "ATokenARPipelineOutput", "ATokenARTransformer", "ATokenDiT", "ATokenDiTPipeline",
    "DiTTrainer", "GeneratorTrainConfig", "LatentShards", "denormalize_latents", "encode_dataset",
    "latent_normalization", "normalize_latents", "write_latent_stats",
]
