"""The training loop both generators share: shards in, a saved pipeline out, on accelerate, resumable.

Process r of W at step s trains on positions (s * W + r) * B ... + B - 1 of an endless stream of per-epoch
permutations of the dataset (every sample once per epoch over all processes); noise and label dropout come from
generators seeded by (seed, step, process). Model, optimiser, EMA, scheduler, RNG states and the step are
checkpointed with :mod:`atoken_diffusers.training.checkpoint`, so a resumed run repeats the uninterrupted one. The
end of training writes ``output_dir/pipeline`` (EMA weights), a folder ``from_pretrained`` loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ...training.checkpoint import Progress, finish_step, start_run
from ...training.optimization import make_optimizer, make_scheduler
from ...training.run_log import progress_bar
from ...utils.atomic import save_atomically
from ..data.shards import LatentShards
from .config import GeneratorTrainConfig


def epoch_indices(step: int, rank: int, world: int, batch: int, size: int, seed: int) -> torch.Tensor:
    """(batch,) dataset indices of process ``rank`` at ``step``: consecutive positions of the stream of seeded
    per-epoch permutations of ``range(size)``."""
    pos = (step * world + rank) * batch + np.arange(batch)
    epoch, offset = np.divmod(pos, size)
    out = np.empty(batch, dtype=np.int64)
    for e in np.unique(epoch):  # one or two epochs per batch
        where = epoch == e
        out[where] = np.random.default_rng([seed, int(e)]).permutation(size)[offset[where]]
    return torch.from_numpy(out)


class GeneratorTrainer:
    """Subclasses define :meth:`build_model`, :meth:`compute_loss` and :meth:`build_pipeline`.

    Args:
        config: a :class:`GeneratorTrainConfig`.
        accelerator: an ``accelerate.Accelerator`` (made from the config when None).
    """

    def __init__(self, config: GeneratorTrainConfig, accelerator=None):
        from accelerate import Accelerator
        from diffusers.training_utils import EMAModel

        self.config = config
        run = config.run
        self.accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available(),
                                                      mixed_precision=run.mixed_precision)
        self.out_dir = Path(run.output_dir)
        self.data = self.load_data()
        torch.manual_seed(run.seed)  # identical initial weights on every process
        self.model = self.build_model()
        if run.gradient_checkpointing:
            self.model.enable_gradient_checkpointing()
        self.model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.ema = EMAModel(self.params, decay=run.ema_decay, use_ema_warmup=True) if run.ema_decay > 0 else None
        self.optimizer = make_optimizer(self.model, config.optim)
        self.scheduler = make_scheduler(self.optimizer, config.optim, run.max_steps)
        self.progress = Progress()
        self.wrapped, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        if self.ema is not None:
            self.ema.to(self.accelerator.device)

    # ------------------------------------------------------------------------------------------------ to define

    def load_data(self):
        """The training set: anything with ``len()`` and ``batch(index) -> {name: tensor}`` (default: the latent
        shards of ``data.shards``)."""
        data = self.config.data
        return LatentShards(data.shards, data.kind, data.in_memory)

    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def compute_loss(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        """Scalar loss of a batch (tensors already on the device); random draws from ``generator`` (CPU)."""
        raise NotImplementedError

    def build_pipeline(self, model: torch.nn.Module):
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------ helpers

    def vae_path(self) -> str:
        path = self.config.data.vae or self.data.model["path"]
        if not (Path(path) / "config.json").is_file():
            raise FileNotFoundError(f"the AToken model {path} (data.vae, or the one the shards were encoded with) "
                                    "has no config.json; set data.vae to a converted AToken folder.")
        return path

    def load_vae(self):
        from ...models.autoencoder_atoken import AutoencoderAToken

        return AutoencoderAToken.from_pretrained(self.vae_path(), local_files_only=True).eval()

    def model_kwargs(self, presets: dict) -> dict:
        spec = self.config.model
        if spec.preset not in presets:
            raise ValueError(f"model.preset {spec.preset!r} is unknown; choose one of {', '.join(presets)}.")
        return {**presets[spec.preset], **spec.overrides}

    def _batch(self, step: int) -> tuple[dict, torch.Generator]:
        run, acc = self.config.run, self.accelerator
        index = epoch_indices(step, acc.process_index, acc.num_processes, run.batch_size, len(self.data), run.seed)
        batch = {k: v.to(acc.device) for k, v in self.data.batch(index).items()}
        seed = int(np.random.default_rng([run.seed, step, acc.process_index, 1]).integers(2**62))
        return batch, torch.Generator().manual_seed(seed)

    def drop_labels(self, labels: torch.Tensor, null: int, generator: torch.Generator) -> torch.Tensor:
        """Replace labels by ``null`` with probability ``run.class_dropout``; (B,) on the labels' device."""
        drop = torch.rand(labels.shape[0], generator=generator) < self.config.run.class_dropout
        return torch.where(drop.to(labels.device), torch.full_like(labels, null), labels)

    # ------------------------------------------------------------------------------------------------ loop

    def train(self) -> list[dict]:
        """Run (or resume) to ``run.max_steps``; returns the log records of this call (also in ``log.jsonl``)."""
        run, acc = self.config.run, self.accelerator
        start_run(acc, self.out_dir, self.config.to_dict(), self.ema, self.scheduler, self.progress)
        records, bar = [], progress_bar(acc, run.max_steps, self.progress.step)
        while self.progress.step < run.max_steps:
            step = self.progress.step
            batch, generator = self._batch(step)
            with acc.autocast():
                loss = self.compute_loss(batch, generator)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower optim.lr or use "
                                         "mixed_precision bf16 instead of fp16.")
            acc.backward(loss)
            if self.config.optim.grad_clip:
                acc.clip_grad_norm_(self.params, self.config.optim.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            records.append(finish_step(acc, self.out_dir, run, self.scheduler, self.ema, self.params, self.progress,
                                       bar, lambda done: self._log(done, loss.detach())))
        bar.close()
        self.export()
        return records

    def _log(self, step: int, loss: torch.Tensor) -> dict:
        acc, run = self.accelerator, self.config.run
        value = float(acc.reduce(loss.float(), "mean")) if acc.num_processes > 1 else float(loss)
        record = {"step": step, "loss": value, "lr": self.scheduler.get_last_lr()[0]}
        if acc.is_main_process and (step % run.log_every == 0 or step == 1 or step == run.max_steps):
            with open(self.out_dir / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        return record

    def export(self) -> Path | None:
        """Write ``output_dir/pipeline`` (EMA weights) atomically on the main process; returns its path there."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if not acc.is_main_process:
            return None
        final = self.out_dir / "pipeline"
        if self.ema is not None:
            self.ema.store(self.params)
            self.ema.copy_to(self.params)
        try:
            self.model.eval()
            save_atomically(self.build_pipeline(self.model), final, overwrite=True)
        finally:
            self.model.train()
            if self.ema is not None:
                self.ema.restore(self.params)
        return final
