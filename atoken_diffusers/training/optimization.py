"""Optimiser, learning-rate schedule and the task round-robin of the AToken recipe."""

from __future__ import annotations

import math

import torch

from .config import OptimConfig


def param_groups(model: torch.nn.Module, cfg: OptimConfig) -> list[dict]:
    """Trainable parameters in four groups: encoder / rest, each with and without weight decay (no decay on biases,
    norms, the position table and the pooling probe). The encoder learns at ``encoder_lr_mult`` x the base rate."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_encoder = name.startswith("encoder.")
        decay = p.ndim >= 2 and "pos_table" not in name
        groups.setdefault((is_encoder, decay), []).append(p)
    if not groups:
        raise ValueError("the model has no trainable parameters (everything frozen?).")
    return [
        dict(params=ps, lr=cfg.lr * (cfg.encoder_lr_mult if enc else 1.0), weight_decay=cfg.weight_decay if decay else 0.0,
             lr_mult=cfg.encoder_lr_mult if enc else 1.0)
        for (enc, decay), ps in sorted(groups.items())
    ]


def make_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW (betas 0.9/0.95, wd 0.1 by default), or bitsandbytes' 8-bit AdamW when ``eight_bit`` (works on CPU)."""
    groups = param_groups(model, cfg)
    if cfg.eight_bit:
        try:
            import bitsandbytes as bnb
        except ImportError as err:
            raise ImportError("optim.eight_bit needs bitsandbytes: pip install 'atoken-diffusers[train]'.") from err
        return bnb.optim.AdamW8bit(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def lr_factor(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Linear warm-up to 1, then cosine from 1 to min_lr / lr at ``total_steps``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    floor = cfg.min_lr / cfg.lr
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg, total_steps))


def task_cycle(ratios: dict[str, int]) -> list[str]:
    """One round-robin cycle in which task k appears ratios[k] times, spread evenly (smooth weighted round-robin):
    {"image": 2, "video": 1} -> ["image", "video", "image"]."""
    total, current, cycle = sum(ratios.values()), dict.fromkeys(ratios, 0), []
    for _ in range(total):
        for name, weight in ratios.items():
            current[name] += weight
        pick = max(current, key=current.get)
        current[pick] -= total
        cycle.append(pick)
    return cycle
