"""``ATokenImageTo3DPipeline``: an image in, a 3D Gaussian splat out (TRELLIS-style, on AToken latents).

    pipe = ATokenImageTo3DPipeline.from_pretrained("runs/image-to-3d/pipeline")
    out = pipe("duck.png", num_inference_steps=25, guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
    out.gaussians[0].save_ply("duck.ply")

1. The image (square-cropped to ``image_size``) is encoded by the AToken encoder: its tokens condition both stages.
2. Stage 1: flow sampling of the sparse-structure latent (B, 8, 16, 16, 16) with
   :class:`SparseStructureFlowTransformer`; :class:`SparseStructureVAE` decodes it to 64^3 occupancy logits, and
   the voxels above ``occupancy_threshold`` are kept.
3. Stage 2: flow sampling of AToken latents on those voxels with :class:`SparseLatentFlowTransformer`.
4. AToken's decoder turns the latents into voxel features, :class:`ATokenGaussianDecoder` into Gaussians.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from ...models.autoencoder_atoken import AutoencoderAToken
from ...three_d.gaussian_decoder import ATokenGaussianDecoder
from ...three_d.gaussians import Gaussians
from ...tokens.sparse import SparseTokens
from ...tokens.voxels import tokens_to_voxel_features
from ..data.latent_stats import denormalize_latents
from ..inputs import check_guidance
from .image_condition import image_tokens, load_condition_images
from .sparse_flow import SparseLatentFlowTransformer
from .sparse_structure import SparseStructureVAE, grid_to_coords
from .structure_flow import SparseStructureFlowTransformer

OUTPUT_TYPES = ("gaussians", "latent")


@dataclass
class ImageTo3DPipelineOutput(BaseOutput):
    """Attributes:
    gaussians: one :class:`Gaussians` per image (None for ``output_type="latent"``); ``.save_ply(path)`` writes a
        standard 3D Gaussian Splatting file.
    coords: per image, (N, 3) int64 occupied voxels of the 64^3 grid.
    latents: per image, (N, C) AToken latents of those voxels (not normalised).
    occupancy_logits: (B, 1, 64, 64, 64) stage-1 logits (occupied where > the threshold).
    """

    gaussians: list | None
    coords: list
    latents: list
    occupancy_logits: torch.Tensor


class ATokenImageTo3DPipeline(DiffusionPipeline):
    r"""Image-to-3D generation with AToken latents.

    Components:
        vae: :class:`AutoencoderAToken` (image encoder for the condition, 3D decoder for the latents).
        structure_vae: :class:`SparseStructureVAE` (occupancy <-> structure latent).
        structure_transformer: :class:`SparseStructureFlowTransformer` (stage 1).
        latent_transformer: :class:`SparseLatentFlowTransformer` (stage 2).
        gaussian_decoder: :class:`ATokenGaussianDecoder` (decoded voxel features -> Gaussians).
        scheduler: :class:`~diffusers.FlowMatchEulerDiscreteScheduler` (used by both stages).
    Config:
        image_size: side of the square condition image (a multiple of 16; the training renders' size).
    """

    model_cpu_offload_seq = "vae->structure_transformer->structure_vae->latent_transformer->gaussian_decoder"

    def __init__(self, vae: AutoencoderAToken, structure_vae: SparseStructureVAE,
                 structure_transformer: SparseStructureFlowTransformer, latent_transformer: SparseLatentFlowTransformer,
                 gaussian_decoder: ATokenGaussianDecoder, scheduler: FlowMatchEulerDiscreteScheduler,
                 image_size: int = 256):
        super().__init__()
        self.register_modules(vae=vae, structure_vae=structure_vae, structure_transformer=structure_transformer,
                              latent_transformer=latent_transformer, gaussian_decoder=gaussian_decoder,
                              scheduler=scheduler)
        self.register_to_config(image_size=image_size)

    def check_components(self) -> None:
        s_vae, s_tf, l_tf = self.structure_vae, self.structure_transformer, self.latent_transformer
        enc_dim, channels = self.vae.config.encoder_dim, self.vae.config.latent_channels
        problems = []
        if s_tf.config.cond_dim != enc_dim or l_tf.config.cond_dim != enc_dim:
            problems.append(f"the transformers' cond_dim ({s_tf.config.cond_dim}, {l_tf.config.cond_dim}) must be the "
                            f"AToken encoder_dim {enc_dim}")
        s_latent = (s_vae.config.latent_channels, s_vae.latent_resolution)
        if (s_tf.config.in_channels, s_tf.config.sample_size) != s_latent:
            problems.append("structure_transformer does not fit structure_vae's latent (channels / size)")
        if l_tf.config.in_channels != channels:
            problems.append(f"latent_transformer generates {l_tf.config.in_channels} channels; the AToken VAE has "
                            f"{channels}")
        if s_vae.latent_stats() is None or l_tf.latent_stats() is None:
            problems.append("latent statistics are missing (structure_vae / latent_transformer latents_mean/std)")
        if self.gaussian_decoder.config.latent_channels != 768 or s_vae.config.resolution != 64:
            problems.append("the Gaussian decoder must take 768 voxel features on AToken's 64^3 grid")
        if problems:
            raise ValueError("components do not fit together: " + "; ".join(problems) + ".")

    def _flow(self, model_fn, latents, cond, steps: int, guidance: float):
        """Euler sampling of the flow ODE with classifier-free guidance (zero condition tokens as "no image")."""
        self.scheduler.set_timesteps(steps, device=latents.device)
        for t in self.progress_bar(self.scheduler.timesteps):
            v = model_fn(latents, t, cond).float()
            if guidance > 1:
                uncond = model_fn(latents, t, torch.zeros_like(cond)).float()
                v = uncond + guidance * (v - uncond)
            latents = self.scheduler.step(v, t, latents).prev_sample
        return latents

    @torch.no_grad()
    def __call__(
        self,
        image=None,
        num_inference_steps: int = 25,
        structure_inference_steps: int | None = None,
        guidance_scale: float = 3.0,
        structure_guidance_scale: float | None = None,
        occupancy_threshold: float = 0.0,
        generator: torch.Generator | None = None,
        output_type: str = "gaussians",
        return_dict: bool = True,
    ) -> ImageTo3DPipelineOutput | tuple:
        r"""Generate one 3D object per image.

        Args:
            image: a PIL image, an image file path, an (H, W, 3) array, a float (3, H, W) / (B, 3, H, W) tensor in
                [0, 1], or a list of them. Square-cropped and resized to ``config.image_size``.
            num_inference_steps: Euler steps of stage 2 (and of stage 1 unless ``structure_inference_steps``).
            guidance_scale: classifier-free guidance of stage 2 (and stage 1 unless ``structure_guidance_scale``);
                >= 1, 1 turns it off.
            occupancy_threshold: logit above which a voxel is occupied (0: probability 0.5).
            generator: random source of the initial noise of both stages.
            output_type: ``"gaussians"`` (decode to Gaussians) or ``"latent"`` (stop after stage 2).
        Returns:
            :class:`ImageTo3DPipelineOutput`.
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}; got {output_type!r}.")
        steps1 = num_inference_steps if structure_inference_steps is None else structure_inference_steps
        for name, value in (("num_inference_steps", num_inference_steps), ("structure_inference_steps", steps1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}.")
        g1 = guidance_scale if structure_guidance_scale is None else structure_guidance_scale
        s_tf, l_tf = self.structure_transformer, self.latent_transformer
        check_guidance(g1, True, s_tf.config.cond_dropout_prob)
        check_guidance(guidance_scale, True, l_tf.config.cond_dropout_prob)
        self.check_components()
        device = self._execution_device

        images = load_condition_images(image, self.config.image_size)
        cond = image_tokens(self.vae, images.to(device))  # (B, L, D)
        b = cond.shape[0]

        # Stage 1: structure latent -> occupancy.
        s_vae = self.structure_vae
        r, c = s_vae.latent_resolution, s_vae.config.latent_channels
        z = randn_tensor((b, c, r, r, r), generator=generator, device=device, dtype=torch.float32)
        z = self._flow(lambda x, t, cnd: s_tf(x.to(s_tf.dtype), t.expand(b), cnd.to(s_tf.dtype)).sample, z, cond,
                       steps1, g1)
        logits = s_vae.decode(denormalize_latents(z, s_vae.latent_stats()).to(s_vae.dtype)).float()
        coords = grid_to_coords(logits > occupancy_threshold)  # (N, 4) batch, x, y, z
        empty = [i for i in range(b) if not (coords[:, 0] == i).any()]
        if empty:
            raise RuntimeError(f"stage 1 produced no occupied voxel for image(s) {empty}; try another seed, more "
                               "steps or a lower occupancy_threshold.")

        # Stage 2: AToken latents on the occupied voxels.
        n, channels = coords.shape[0], l_tf.config.in_channels
        x = randn_tensor((n, channels), generator=generator, device=device, dtype=torch.float32)
        x = self._flow(lambda x_, t, cnd: l_tf(x_.to(l_tf.dtype), coords, t.expand(b), cnd.to(l_tf.dtype)).sample,
                       x, cond, num_inference_steps, guidance_scale)
        latents = denormalize_latents(x.t()[None], l_tf.latent_stats())[0].t()
        rows = [coords[:, 0] == i for i in range(b)]
        out_coords = [coords[m, 1:].cpu() for m in rows]
        out_latents = [latents[m].cpu() for m in rows]

        gaussians = None
        if output_type == "gaussians":
            gaussians = [self.decode_gaussians(coords[m, 1:], latents[m]) for m in rows]
        self.maybe_free_model_hooks()
        out = ImageTo3DPipelineOutput(gaussians, out_coords, out_latents, logits.cpu())
        return out if return_dict else out.to_tuple()

    @torch.no_grad()
    def decode_gaussians(self, coords: torch.Tensor, latents: torch.Tensor) -> Gaussians:
        """(N, 3) voxels and their (N, C) AToken latents -> Gaussians (AToken decoder, then the Gaussian decoder)."""
        vae, gs = self.vae, self.gaussian_decoder
        tokens = SparseTokens.from_voxels(coords.to(vae.device), latents.to(vae.device, vae.dtype))
        feats = tokens_to_voxel_features(vae.decode_tokens(tokens).feats)
        gs_coords = torch.cat([torch.zeros_like(coords[:, :1]), coords], 1).to(gs.device)
        out = gs(feats.to(gs.device, gs.dtype), gs_coords)
        return Gaussians(out.xyz.float().cpu(), out.features_dc.reshape(-1, 3).float().cpu(), out.scaling.float().cpu(),
                         out.rotation.float().cpu(), out.opacity.float().cpu())
