"""Training the projector and LoRA adapters of an :class:`ATokenLlava` with accelerate (any number of GPUs; CPU
works for tiny models)."""

from __future__ import annotations

from typing import Sequence

import torch

from .mllm import ATokenLlava


def train_projector_and_lora(
    model: ATokenLlava,
    samples: Sequence[tuple[torch.Tensor, str, str]],
    steps: int = 100,
    lr: float = 2e-4,
    batch_size: int = 4,
    lora_rank: int = 8,
    accelerator=None,
) -> list[float]:
    """Fit ``answer`` given (``pixels`` (1, 3, [T,] H, W), ``prompt``) samples; returns the loss of every step.

    The vision tower stays frozen; the projector and the LM's LoRA adapters (added if missing) are trained with AdamW.
    Launch under ``accelerate launch`` for data-parallel training; each process cycles through its own shard.
    """
    from accelerate import Accelerator

    if not samples:
        raise ValueError("samples is empty; pass (pixels, prompt, answer) triples.")
    accelerator = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    if not hasattr(model.language_model, "peft_config"):
        model.add_lora(rank=lora_rank)
    params = list(model.projector.parameters()) + [p for p in model.language_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    shard = list(samples)[accelerator.process_index :: accelerator.num_processes] or list(samples)
    losses = []
    model.train()
    for step in range(steps):
        batch = [shard[(step * batch_size + j) % len(shard)] for j in range(batch_size)]
        pixels = torch.cat([b[0] for b in batch]).to(accelerator.device)
        loss = model(pixels, [b[1] for b in batch], [b[2] for b in batch]).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses
