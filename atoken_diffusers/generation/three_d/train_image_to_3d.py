"""Training image-to-3D in three stages on an :func:`encode_3d_dataset` folder, each a resumable
:class:`GeneratorTrainer` run in its own sub-folder of the run directory, then assembling the pipeline.

1. ``structure_vae``: :class:`SparseStructureVAE` on the 64^3 occupancies (BCE + Dice + ``kl_weight`` x KL); its
   export stores the per-channel statistics of the posterior means.
2. ``structure_flow``: :class:`SparseStructureFlowTransformer`, rectified flow on the normalised structure latents
   (posterior means of the frozen stage-1 VAE) conditioned on the AToken tokens of a random condition view.
3. ``latent_flow``: :class:`SparseLatentFlowTransformer`, rectified flow on the normalised AToken latents of the
   occupied voxels, conditioned the same way. (Independent of stages 1-2.)

Conditions are replaced by zeros with probability ``run.class_dropout`` (classifier-free guidance). Then
:func:`assemble_pipeline` writes ``RUN/pipeline`` with the AToken model and a Gaussian decoder folder.

    python -m atoken_diffusers.generation.three_d.train_image_to_3d --stage encode --meshes "meshes/*.glb" \\
        --vae models/atoken-soc --data runs/3d-data        # once: voxels, latents, condition renders
    python -m atoken_diffusers.generation.three_d.train_image_to_3d --data runs/3d-data --output-dir runs/i23d \\
        --stage structure_vae            # then structure_flow, latent_flow, and:
    python -m atoken_diffusers.generation.three_d.train_image_to_3d --output-dir runs/i23d --stage assemble \\
        --gaussian-decoder models/3d_decode_gs
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ...utils.atomic import save_atomically
from ..data.latent_stats import RunningMoments, normalize_latents, stats_from_latents
from ..training.config import DataConfig, FlowConfig, GeneratorTrainConfig, ModelSpec
from ..training.loop import GeneratorTrainer
from .data import VoxelLatentSet, encode_3d_dataset
from .sparse_flow import SPARSE_FLOW_PRESETS, SparseLatentFlowTransformer
from .sparse_structure import STRUCTURE_VAE_PRESETS, SparseStructureVAE, occupancy_loss
from .structure_flow import FLOW_PRESETS, SparseStructureFlowTransformer

STAGES = ("structure_vae", "structure_flow", "latent_flow")


@dataclass
class ThreeDConfig:
    stage: str = "structure_vae"         # structure_vae | structure_flow | latent_flow
    structure_vae: str | None = None     # trained SparseStructureVAE folder; default RUN/structure_vae/pipeline
    kl_weight: float = 1e-4              # structure_vae only


@dataclass
class ImageTo3DTrainConfig(GeneratorTrainConfig):
    """``data.shards`` is the :func:`encode_3d_dataset` folder; ``run.output_dir`` the stage's folder;
    ``model.preset`` a name of the stage's presets (``STRUCTURE_VAE_PRESETS``, ``FLOW_PRESETS``,
    ``SPARSE_FLOW_PRESETS``)."""

    model: ModelSpec = field(default_factory=lambda: ModelSpec(preset="S"))
    data: DataConfig = field(default_factory=lambda: DataConfig(kind="3d"))
    flow: FlowConfig = field(default_factory=lambda: FlowConfig(shift=3.0))
    three_d: ThreeDConfig = field(default_factory=ThreeDConfig)

    def validate(self) -> None:
        super().validate()
        if self.three_d.stage not in STAGES:
            raise ValueError(f"three_d.stage must be one of {', '.join(STAGES)}; got {self.three_d.stage!r}.")


class _ThreeDTrainer(GeneratorTrainer):
    """What the stages share: the dataset and the condition of a batch."""

    def load_data(self) -> VoxelLatentSet:
        return VoxelLatentSet(self.config.data.shards)

    def condition(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        """(B, L, D) tokens of one random view per object, zeroed with probability ``run.class_dropout``."""
        cond = batch["cond"]
        b, v = cond.shape[:2]
        view = torch.randint(v, (b,), generator=generator).to(cond.device)
        keep = (torch.rand(b, generator=generator) >= self.config.run.class_dropout).to(cond)
        return cond[torch.arange(b, device=cond.device), view] * keep[:, None, None]

    def flow_sample(self, x0: torch.Tensor, per_item: torch.Tensor | None, b: int, generator: torch.Generator):
        """(x_s, s (B,), target velocity) for data x0; ``per_item`` (rows,) maps rows of x0 to samples (sparse)."""
        flow = self.config.flow
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        u = (torch.sigmoid(torch.randn(b, generator=generator)) if flow.timestep_sampling == "logit_normal"
             else torch.rand(b, generator=generator))
        s = (flow.shift * u / (1 + (flow.shift - 1) * u)).to(x0)
        s_rows = (s if per_item is None else s[per_item]).view(-1, *([1] * (x0.ndim - 1)))
        return (1 - s_rows) * x0 + s_rows * noise, s, noise - x0


class StructureVAETrainer(_ThreeDTrainer):
    def build_model(self) -> SparseStructureVAE:
        return SparseStructureVAE(**self.model_kwargs(STRUCTURE_VAE_PRESETS))

    def compute_loss(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        occ = batch["occupancy"]
        logits, posterior = self.wrapped(occ, sample_posterior=True, generator=generator)
        kl = 0.5 * (posterior.mean.pow(2) + posterior.var - 1 - posterior.logvar).mean()  # per latent value
        return occupancy_loss(logits, occ) + self.config.three_d.kl_weight * kl

    @torch.no_grad()
    def build_pipeline(self, model: SparseStructureVAE) -> SparseStructureVAE:
        moments = RunningMoments()
        for i in range(len(self.data)):
            occ = self.data.batch(torch.tensor([i]))["occupancy"].to(self.accelerator.device)
            moments.update(model.encode(occ).mean)
        mean, std = moments.result()
        model.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist())
        return model


class StructureFlowTrainer(_ThreeDTrainer):
    def build_model(self) -> SparseStructureFlowTransformer:
        path = self.config.three_d.structure_vae or str(self.out_dir.parent / "structure_vae" / "pipeline")
        if not (Path(path) / "config.json").is_file():
            raise FileNotFoundError(f"three_d.structure_vae {path}: no trained SparseStructureVAE there; run the "
                                    "structure_vae stage first (or set three_d.structure_vae).")
        self.structure_vae = SparseStructureVAE.from_pretrained(path).eval().requires_grad_(False)
        self.structure_vae.to(self.accelerator.device)
        self.stats = self.structure_vae.latent_stats()
        if self.stats is None:
            raise ValueError(f"{path} has no latents_mean/latents_std; export it with the structure_vae stage.")
        vae = self.structure_vae
        return SparseStructureFlowTransformer(
            in_channels=vae.config.latent_channels, sample_size=vae.latent_resolution, cond_dim=self.data.cond_dim,
            cond_dropout_prob=self.config.run.class_dropout, **self.model_kwargs(FLOW_PRESETS))

    def compute_loss(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            x0 = normalize_latents(self.structure_vae.encode(batch["occupancy"]).mean.float(), self.stats)
        b = x0.shape[0]
        xs, s, target = self.flow_sample(x0, None, b, generator)
        pred = self.wrapped(xs, s * 1000, self.condition(batch, generator)).sample
        return F.mse_loss(pred.float(), target.float())

    def build_pipeline(self, model):
        return model


class LatentFlowTrainer(_ThreeDTrainer):
    def build_model(self) -> SparseLatentFlowTransformer:
        self.stats = stats_from_latents(self.data.iter_latents())
        return SparseLatentFlowTransformer(
            in_channels=self.data.latent_channels, cond_dim=self.data.cond_dim,
            cond_dropout_prob=self.config.run.class_dropout, **self.model_kwargs(SPARSE_FLOW_PRESETS))

    def compute_loss(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        coords = batch["coords"]
        x0 = normalize_latents(batch["latents"].t()[None], self.stats)[0].t()
        b = batch["cond"].shape[0]
        xs, s, target = self.flow_sample(x0, coords[:, 0], b, generator)
        pred = self.wrapped(xs, coords, s * 1000, self.condition(batch, generator)).sample
        return F.mse_loss(pred.float(), target.float())

    def build_pipeline(self, model: SparseLatentFlowTransformer) -> SparseLatentFlowTransformer:
        model.register_to_config(latents_mean=self.stats[0].tolist(), latents_std=self.stats[1].tolist())
        return model


TRAINERS = {"structure_vae": StructureVAETrainer, "structure_flow": StructureFlowTrainer,
            "latent_flow": LatentFlowTrainer}


def train_stage(data: str, run_dir: str | os.PathLike, stage: str, overrides: dict | None = None,
                config: str | None = None) -> list[dict]:
    """Train (or resume) one stage into ``run_dir/stage``; returns its log records."""
    if stage not in TRAINERS:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}; got {stage!r}.")
    values = {"data.shards": str(data), "run.output_dir": str(Path(run_dir) / stage), "three_d.stage": stage,
              **(overrides or {})}
    return TRAINERS[stage](ImageTo3DTrainConfig.from_yaml(config, values)).train()


def assemble_pipeline(run_dir: str | os.PathLike, gaussian_decoder: str | os.PathLike, vae: str | None = None,
                      data: str | None = None, shift: float = 3.0):
    """``run_dir/pipeline``: the three stage models, the AToken model (``vae``, default: the dataset's) and the
    Gaussian decoder folder as an :class:`ATokenImageTo3DPipeline` (written atomically). Returns the pipeline."""
    import json

    from diffusers import FlowMatchEulerDiscreteScheduler

    from ...models.autoencoder_atoken import AutoencoderAToken
    from ...three_d.gaussian_decoder import ATokenGaussianDecoder
    from .pipeline_image_to_3d import ATokenImageTo3DPipeline

    run = Path(run_dir)
    stages = {s: run / s / "pipeline" for s in STAGES}
    missing = [s for s, p in stages.items() if not (p / "config.json").is_file()]
    if missing:
        raise FileNotFoundError(f"{run} lacks the trained stage(s) {', '.join(missing)}; train them first.")
    stage_config = json.loads((run / "structure_flow" / "config.json").read_text())
    data = data or stage_config["data"]["shards"]
    manifest = json.loads((Path(data) / "manifest.json").read_text())
    pipe = ATokenImageTo3DPipeline(
        vae=AutoencoderAToken.from_pretrained(vae or manifest["model"]["path"]).eval(),
        structure_vae=SparseStructureVAE.from_pretrained(stages["structure_vae"]),
        structure_transformer=SparseStructureFlowTransformer.from_pretrained(stages["structure_flow"]),
        latent_transformer=SparseLatentFlowTransformer.from_pretrained(stages["latent_flow"]),
        gaussian_decoder=ATokenGaussianDecoder.from_pretrained(gaussian_decoder),
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift),
        image_size=manifest["image_size"])
    pipe.check_components()
    save_atomically(pipe, run / "pipeline", overwrite=True)
    return pipe


def main(argv: list[str] | None = None):
    from ...training.overrides import overrides_from_args

    p = argparse.ArgumentParser(prog="python -m atoken_diffusers.generation.three_d.train_image_to_3d",
                                description="Train one stage of image-to-3D (resumes; works under `accelerate "
                                            "launch`), or assemble the pipeline from the trained stages.")
    p.add_argument("--stage", required=True, choices=["encode", *STAGES, "assemble"])
    p.add_argument("--data", help="folder of encode_3d_dataset (data.shards); written by --stage encode")
    p.add_argument("--output-dir", help="run folder; each stage trains in RUN/STAGE")
    p.add_argument("--meshes", nargs="+", help="encode: mesh files, folders, globs or gradio:models3d")
    p.add_argument("--views", type=int, default=8, help="encode: condition renders per object")
    p.add_argument("--image-size", type=int, default=256, help="encode: side of the condition renders")
    p.add_argument("--config", help="YAML with the sections model, data, optim, run, flow, three_d")
    p.add_argument("--preset", help="model size (model.preset)")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--gaussian-decoder", help="assemble: ATokenGaussianDecoder folder")
    p.add_argument("--vae", help="encode: AToken folder; assemble: the same (default: the data's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    try:
        if args.stage == "encode":
            if not (args.meshes and args.vae and args.data):
                raise ValueError("--stage encode needs --meshes, --vae and --data (the folder to write).")
            encode_3d_dataset(args.meshes, args.vae, args.data, views=args.views, image_size=args.image_size)
            return None
        if not args.output_dir:
            raise ValueError("--output-dir is required.")
        if args.stage == "assemble":
            if not args.gaussian_decoder:
                raise ValueError("--stage assemble needs --gaussian-decoder DIR.")
            assemble_pipeline(args.output_dir, args.gaussian_decoder, args.vae, args.data)
            print(f"wrote {Path(args.output_dir) / 'pipeline'}")
            return None
        output_dir, args.output_dir = args.output_dir, None  # the stage folder is RUN/STAGE
        overrides = overrides_from_args(args, {"preset": "model.preset"})
        if not args.data:
            raise ValueError("--data is required for training stages.")
        return train_stage(args.data, output_dir, args.stage, overrides, args.config)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"train_image_to_3d: {err}") from None


if __name__ == "__main__":
    main()
