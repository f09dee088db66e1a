"""The AToken trainer on accelerate: one process per GPU (or CPU process) under ``accelerate launch`` with DDP (FSDP
and DeepSpeed accelerate configs are untested: EMA and clipping use the unsharded parameters); mixed precision and
gradient accumulation come from the training config.

Every optimizer step runs ``grad_accum`` micro-batches, each from the next task of the round-robin cycle. Batches and
posterior noise are drawn from generators seeded by (seed, micro-step, process), and model, EMA, optimiser,
scheduler, RNG states and the step are checkpointed together, so a resumed run repeats the uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..tokens.sparse import SparseTokens
from ..utils.atomic import save_atomically
from .checkpoint import Progress, finish_step, start_run
from .config import TrainConfig
from .data import make_batch, make_source
from .lora import add_lora
from .loss_factory import build_loss, build_text_tower
from .model_init import build_model
from .optimization import make_optimizer, make_scheduler, task_cycle
from .run_log import progress_bar


class ReconstructionStep(nn.Module):
    """Encode a packed batch, draw the latent (posterior sample, mean, or FSQ codes), decode. Wrapping this in one
    module lets DDP see the whole forward pass."""

    def __init__(self, autoencoder):
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, feats: torch.Tensor, coords: torch.Tensor, noise: torch.Tensor | None):
        ae = self.autoencoder
        out = ae.encode_tokens(SparseTokens(feats, coords))
        moments = out.latent_dist.parameters
        mean, logvar = moments.chunk(2, dim=-1)
        if ae.quantizer is not None:
            z = ae.quantizer.quantize(mean)[0]
        elif noise is not None:
            z = mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * noise.to(mean.dtype)
        else:
            z = mean
        patches = ae.decode_tokens(SparseTokens(z, coords)).feats
        return patches, moments, out.embedding


class Trainer:
    """Args:
    config: a :class:`TrainConfig`.
    accelerator: an ``accelerate.Accelerator`` (made from the config when None).
    """

    def __init__(self, config: TrainConfig, accelerator=None):
        from accelerate import Accelerator
        from diffusers.training_utils import EMAModel

        self.config = config
        run = config.run
        # cpu=True without CUDA: processes started by `accelerate launch --multi_gpu` / torchrun then join over gloo.
        self.accelerator = accelerator or Accelerator(
            cpu=not torch.cuda.is_available(), mixed_precision=run.mixed_precision,
            gradient_accumulation_steps=run.grad_accum)
        self.out_dir = Path(run.output_dir)
        torch.manual_seed(run.seed)  # identical initial weights on every process
        self.model = build_model(config.model)
        if config.lora is not None:
            add_lora(self.model, config.lora)
        if run.gradient_checkpointing:
            self.model.enable_gradient_checkpointing()
        self.model.train()
        for name, p in self.model.named_parameters():
            if name.startswith(tuple(config.optim.freeze)):
                p.requires_grad_(False)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.ema = EMAModel(self.trainable, decay=run.ema_decay, use_ema_warmup=False)
        self.optimizer = make_optimizer(self.model, config.optim)
        self.scheduler = make_scheduler(self.optimizer, config.optim, run.max_steps)
        self.sources = {name: make_source(task.source) for name, task in config.tasks.items()}
        self.cycle = task_cycle({name: task.ratio for name, task in config.tasks.items()})
        device = self.accelerator.device
        self.loss = build_loss(config.losses).to(device)
        self.text_tower = build_text_tower(config.losses, device)
        self.progress = Progress()
        self.step_module, self.optimizer = self.accelerator.prepare(ReconstructionStep(self.model), self.optimizer)
        self.ema.to(device)

    # ------------------------------------------------------------------------------------------------ steps

    def _micro_step(self, micro: int) -> dict:
        run, acc = self.config.run, self.accelerator
        task = self.cycle[micro % len(self.cycle)]
        rng = np.random.default_rng([run.seed, micro, acc.process_index])
        batch = make_batch(self.sources[task], self.config.tasks[task].batch_size, rng)
        device = acc.device
        feats, coords = batch.tokens.feats.to(device), batch.tokens.coords.to(device)
        noise = None
        if run.sample_posterior and self.model.quantizer is None:
            gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
            noise = torch.randn(feats.shape[0], self.model.config.latent_channels, generator=gen).to(device)
        with acc.accumulate(self.step_module), acc.autocast():
            patches, moments, embedding = self.step_module(feats, coords, noise)
            recon = batch.split(patches)
            targets = [t.to(device) for t in batch.targets]
            text = self.text_tower.encode(batch.captions) if self.text_tower is not None else None
            kl_moments = None if self.model.quantizer is not None else moments
            loss, terms = self.loss(batch.kind, recon, targets, kl_moments, embedding, text)
            if not torch.isfinite(loss):  # before any update (a bad step must not reach the weights)
                raise FloatingPointError(f"loss became {loss.item()} at micro-step {micro} ({task}); lower optim.lr "
                                         "or use mixed_precision bf16 instead of fp16.")
            acc.backward(loss)
            if acc.sync_gradients and self.config.optim.grad_clip:
                acc.clip_grad_norm_(self.trainable, self.config.optim.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return {"task": task, "loss": float(terms.pop("loss")), **{f"{task}/{k}": float(v) for k, v in terms.items()}}

    def train(self) -> list[dict]:
        """Run (or resume) to ``run.max_steps``; returns the log records of this call (also in ``log.jsonl``)."""
        run, acc = self.config.run, self.accelerator
        start_run(acc, self.out_dir, self.config.to_dict(), self.ema, self.scheduler, self.progress)
        self.step_module.train()
        records, bar = [], progress_bar(acc, run.max_steps, self.progress.step)
        while self.progress.step < run.max_steps:
            step = self.progress.step
            micro_logs = [self._micro_step(step * run.grad_accum + j) for j in range(run.grad_accum)]
            records.append(finish_step(acc, self.out_dir, run, self.scheduler, self.ema, self.trainable, self.progress,
                                       bar, lambda done: self._log(done, micro_logs)))
        bar.close()
        self.export()
        return records

    def _log(self, step: int, micro_logs: list[dict]) -> dict:
        acc = self.accelerator
        local = torch.tensor([m["loss"] for m in micro_logs], device=acc.device).mean()
        record = {"step": step, "loss": float(acc.reduce(local, "mean")), "lr": self.scheduler.get_last_lr()[0],
                  "tasks": [m["task"] for m in micro_logs],
                  "terms": {k: v for m in micro_logs for k, v in m.items() if k not in ("task", "loss")}}
        if acc.is_main_process and (step % self.config.run.log_every == 0 or step == 1 or step == self.config.run.max_steps):
            with open(self.out_dir / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        return record

    # ------------------------------------------------------------------------------------------------ export

    def export(self) -> None:
        """Write ``final/`` (EMA weights, a diffusers folder) and, for LoRA runs, ``lora/`` (adapter weights)."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if not acc.is_main_process:
            return
        model = acc.unwrap_model(self.step_module).autoencoder
        self.ema.store(self.trainable)
        self.ema.copy_to(self.trainable)
        try:
            if self.config.lora is not None:
                save_atomically(model, self.out_dir / "lora", overwrite=True, save=lambda d: model.save_lora_adapter(str(d)))
            else:
                save_atomically(model, self.out_dir / "final", overwrite=True)
        finally:
            self.ema.restore(self.trainable)
