"""Checkpoints of a training run: written to a temporary folder and renamed when complete
(:mod:`..utils.atomic`; a killed run never leaves a half-written checkpoint that resume would pick), the newest
``keep`` retained.

A checkpoint holds what accelerate saves (model as safetensors, optimiser, RNG state of every process) plus
``training_state.pt`` (EMA, scheduler, step), which is read back with ``torch.load(weights_only=True)``: nothing in a
checkpoint is unpickled as arbitrary objects.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from ..utils.atomic import publish_folder, remove_stale_temps, shared_temp_folder, write_atomically

_NAME = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "training_state.pt"


class Progress:
    """The training position: optimizer steps done. Batches are a function of it, so it is the data position."""

    def __init__(self) -> None:
        self.step = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder of a run, or None."""
    folder = Path(run_dir) / "checkpoints"
    found = [(int(m.group(1)), p) for p in folder.glob("checkpoint-*") if (m := _NAME.match(p.name)) and p.is_dir()]
    return max(found)[1] if found else None


def save_checkpoint(accelerator, run_dir: str | Path, step: int, training_state: dict, keep: int = 2) -> Path:
    """Save on every process (each writes its RNG state), publish atomically on the main process.
    ``training_state``: tensors, numbers, lists and dicts only (EMA, scheduler, progress state dicts)."""
    folder = Path(run_dir) / "checkpoints"
    final = folder / f"checkpoint-{step:08d}"
    tmp = shared_temp_folder(final, create=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    if accelerator.is_main_process:
        torch.save(training_state, tmp / STATE_FILE)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        publish_folder(tmp, final, overwrite=True)
        done = sorted(p for p in folder.glob("checkpoint-*") if _NAME.match(p.name))
        for old in done[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, folder: str | Path) -> dict:
    """Restore accelerate's part of ``folder`` and return its training state."""
    accelerator.load_state(str(folder))
    return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)


def start_run(accelerator, run_dir: str | Path, config: dict, ema, scheduler, progress) -> Path | None:
    """Prepare ``run_dir`` (remove partial checkpoints, write ``config.json``) and resume from its newest checkpoint:
    accelerate's state plus ``ema`` (may be None), ``scheduler`` and ``progress``; log records after the checkpoint
    are dropped (the resumed run writes them again). Returns the checkpoint resumed from, or None."""
    from .run_log import truncate_log

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:
        clean_partial(run_dir)
        write_atomically(run_dir / "config.json", json.dumps(config, indent=1))
    accelerator.wait_for_everyone()
    resume = latest_checkpoint(run_dir)
    if resume is None:
        return None
    state = load_checkpoint(accelerator, resume)
    if ema is not None:
        ema.load_state_dict(state["ema"])
        ema.to(accelerator.device)  # the state was read onto the CPU
    scheduler.load_state_dict(state["scheduler"])
    progress.load_state_dict(state["progress"])
    accelerator.print(f"resumed from {resume} at step {progress.step}")
    if accelerator.is_main_process:
        truncate_log(run_dir / "log.jsonl", progress.step)
    return resume


def checkpoint_run(accelerator, run_dir: str | Path, ema, scheduler, progress, keep: int = 2) -> Path:
    """:func:`save_checkpoint` of accelerate's state plus ``ema`` (may be None), ``scheduler`` and ``progress``."""
    state = {"ema": ema.state_dict() if ema is not None else {}, "scheduler": scheduler.state_dict(),
             "progress": progress.state_dict()}
    return save_checkpoint(accelerator, run_dir, progress.step, state, keep)


def finish_step(accelerator, run_dir, run, scheduler, ema, params, progress, bar, log) -> dict:
    """Everything after an optimizer step, shared by the trainers: the scheduler and EMA step, the step counter, the
    log record (``log(step)`` returns it), the progress bar, and a checkpoint every ``run.checkpoint_every`` steps
    and at the end. Returns the record."""
    scheduler.step()
    if ema is not None:
        ema.step(params)
    progress.step += 1
    record = log(progress.step)
    bar.update(1)
    bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)
    if progress.step % run.checkpoint_every == 0 or progress.step == run.max_steps:
        checkpoint_run(accelerator, run_dir, ema, scheduler, progress, run.keep_checkpoints)
    return record


def clean_partial(run_dir: str | Path) -> None:
    """Remove temporary folders a killed run left behind (also ``checkpoint-N.tmp``, the name before utils.atomic)."""
    folder = Path(run_dir) / "checkpoints"
    remove_stale_temps(folder)
    for p in folder.glob("checkpoint-*.tmp"):
        shutil.rmtree(p, ignore_errors=True)
