"""LoRA fine-tuning through peft (diffusers' adapter API): add trainable adapters, load saved ones, merge them.

A LoRA run exports ``lora/pytorch_lora_weights.safetensors``; load it into the base model it was trained from with
:func:`load_lora`, and bake it into the weights with :func:`merge_lora` (the result saves as a plain model folder).
"""

from __future__ import annotations

from pathlib import Path

from .config import LoraConfig

WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def add_lora(model, cfg: LoraConfig) -> None:
    """Freeze ``model`` and add trainable LoRA adapters to the linear layers named in ``cfg.target_modules``."""
    from peft import LoraConfig as PeftLoraConfig

    model.requires_grad_(False)
    model.add_adapter(PeftLoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=list(cfg.target_modules)))
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)


def load_lora(model, folder: str | Path) -> None:
    """Load adapters saved by a LoRA run (``folder`` holds ``pytorch_lora_weights.safetensors``)."""
    if not (Path(folder) / WEIGHT_NAME).is_file():
        raise FileNotFoundError(f"{folder}: no {WEIGHT_NAME}; pass the lora/ folder of a LoRA training run.")
    model.load_lora_adapter(str(folder), weight_name=WEIGHT_NAME, prefix=None)


def merge_lora(model) -> None:
    """Fold the active adapters into the base weights and drop the adapter layers."""
    model.fuse_lora()
    model.unload_lora()
