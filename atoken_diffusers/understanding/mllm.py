"""AToken as the vision tower of a multimodal LLM (LLaVA style).

The LLM sees the dense encoder features (after the final LayerNorm, before the latent projection) mapped by a
two-layer MLP projector into its embedding space, in place of an ``<image>`` token in the prompt. Long videos can be
summarised with SlowFast-LLaVA-style pathways: a few latent frames at full resolution (slow) plus every latent frame
pooled to a small grid (fast).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100


class ATokenVisionTower(nn.Module):
    """Frozen AToken encoder returning (B, N, encoder_dim) visual tokens for images or videos.

    Args:
        autoencoder: an ``AutoencoderAToken``.
        slowfast: for videos, use slow (every ``slow_stride``-th latent frame, full resolution) + fast (all latent
            frames average-pooled to ``fast_size`` x ``fast_size``) pathways instead of every token.
    """

    def __init__(self, autoencoder, slowfast: bool = False, slow_stride: int = 4, fast_size: int = 4):
        super().__init__()
        self.autoencoder = autoencoder.requires_grad_(False).eval()
        self.hidden_size = autoencoder.config.encoder_dim
        self.slowfast, self.slow_stride, self.fast_size = slowfast, slow_stride, fast_size

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.autoencoder.encode_features(x)  # (B, C, h, w) or (B, C, t, h, w)
        if feats.ndim == 5 and self.slowfast:
            t, h, w = feats.shape[2:]
            slow = feats[:, :, :: self.slow_stride]
            fast = F.adaptive_avg_pool3d(feats.float(), (t, min(self.fast_size, h), min(self.fast_size, w))).to(feats.dtype)
            return torch.cat([slow.flatten(2), fast.flatten(2)], dim=2).transpose(1, 2)
        return feats.flatten(2).transpose(1, 2)


class MultimodalProjector(nn.Sequential):
    """LLaVA-1.5's projector: Linear -> GELU -> Linear."""

    def __init__(self, vision_dim: int, text_dim: int):
        super().__init__(nn.Linear(vision_dim, text_dim), nn.GELU(), nn.Linear(text_dim, text_dim))


class ATokenLlava(nn.Module):
    """Vision tower + projector + any transformers causal LM.

    Prompts contain ``image_token`` exactly once; it is replaced by the projected visual tokens.
    """

    def __init__(self, vision_tower: ATokenVisionTower, language_model, tokenizer, image_token: str = "<image>"):
        super().__init__()
        self.vision_tower = vision_tower
        self.language_model = language_model
        self.tokenizer = tokenizer
        self.image_token = image_token
        # Registered as a special token so it is matched whole before pre-tokenisation, even if the vocab has it.
        tokenizer.add_tokens([image_token], special_tokens=True)
        if len(tokenizer) > language_model.get_input_embeddings().num_embeddings:
            language_model.resize_token_embeddings(len(tokenizer))
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.projector = MultimodalProjector(vision_tower.hidden_size, language_model.config.hidden_size)

    @classmethod
    def from_pretrained(cls, autoencoder, language_model_path: str | Path, slowfast: bool = False, **kwargs):
        """Load the LM and tokenizer from a local folder."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(language_model_path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"language model path {str(path)!r} has no config.json; pass a local transformers folder.")
        lm = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, **kwargs)
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        return cls(ATokenVisionTower(autoencoder, slowfast=slowfast), lm, tok)

    # ------------------------------------------------------------------------------------------ inputs

    def _tokens(self, prompt: str, answer: str | None) -> tuple[list[int], list[int]]:
        if prompt.count(self.image_token) != 1:
            prompt = f"{self.image_token}\n{prompt}" if self.image_token not in prompt else prompt
            if prompt.count(self.image_token) != 1:
                raise ValueError(f"each prompt must contain {self.image_token!r} at most once; got {prompt!r}.")
        ids = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        labels = [IGNORE_INDEX] * len(ids)
        if answer is not None:
            ans = self.tokenizer(" " + answer, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
            ids, labels = ids + ans, labels + ans
        return ids, labels

    def build_inputs(self, visual: torch.Tensor, prompts: Sequence[str], answers: Sequence[str] | None = None,
                     left_pad: bool = False):
        """Embeddings with the visual tokens spliced in, attention mask and labels (visual/prompt tokens ignored).

        Args:
            visual: (B, N, encoder_dim) visual tokens from the vision tower.
        """
        if len(prompts) != visual.shape[0] or (answers is not None and len(answers) != len(prompts)):
            raise ValueError(
                f"got {visual.shape[0]} visual samples, {len(prompts)} prompts and "
                f"{len(answers) if answers is not None else 'no'} answers; they must match one to one."
            )
        embed = self.language_model.get_input_embeddings()
        projected = self.projector(visual.to(self.projector[0].weight.dtype))
        rows, label_rows = [], []
        for i, prompt in enumerate(prompts):  # per sample: prompts have different lengths
            ids, labels = self._tokens(prompt, None if answers is None else answers[i])
            ids_t = torch.tensor(ids, device=projected.device)
            at = ids.index(self.image_token_id)
            text = embed(ids_t)
            rows.append(torch.cat([text[:at], projected[i].to(text.dtype), text[at + 1:]]))
            label_rows.append(labels[:at] + [IGNORE_INDEX] * projected.shape[1] + labels[at + 1:])
        length = max(r.shape[0] for r in rows)
        b, dim = len(rows), rows[0].shape[1]
        embeds = rows[0].new_zeros(b, length, dim)
        mask = torch.zeros(b, length, dtype=torch.long, device=embeds.device)
        labels = torch.full((b, length), IGNORE_INDEX, dtype=torch.long, device=embeds.device)
        for i, (r, lab) in enumerate(zip(rows, label_rows)):
            span = slice(length - r.shape[0], length) if left_pad else slice(0, r.shape[0])
            embeds[i, span], mask[i, span] = r, 1
            labels[i, span] = torch.tensor(lab, device=embeds.device)
        return embeds, mask, labels

    # ------------------------------------------------------------------------------------------ use

    def forward(self, pixels: torch.Tensor, prompts: Sequence[str], answers: Sequence[str]):
        """Language-modelling loss of ``answers`` given the visual input and ``prompts``."""
        embeds, mask, labels = self.build_inputs(self.vision_tower(pixels), prompts, answers)
        return self.language_model(inputs_embeds=embeds, attention_mask=mask, labels=labels)

    @torch.no_grad()
    def generate(self, pixels: torch.Tensor, prompts: Sequence[str], max_new_tokens: int = 32, **kwargs) -> list[str]:
        """Answers for images (B, 3, H, W) or videos (B, 3, T, H, W) and one prompt per sample."""
        embeds, mask, _ = self.build_inputs(self.vision_tower(pixels), prompts, left_pad=True)
        out = self.language_model.generate(
            inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id, **kwargs,
        )
        self.last_generated_ids = out
        return self.tokenizer.batch_decode(out, skip_special_tokens=True)

    # ------------------------------------------------------------------------------------------ adapters

    def add_lora(self, rank: int = 8, alpha: int = 16, target_modules: str | Sequence[str] = "all-linear") -> None:
        """Wrap the LM with trainable LoRA adapters (peft; every linear layer but the output head by default, as in
        QLoRA); the projector stays trainable, everything else frozen."""
        from peft import LoraConfig, get_peft_model

        targets = target_modules if isinstance(target_modules, str) else list(target_modules)
        self.language_model = get_peft_model(self.language_model, LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets))

    def save_adapters(self, folder: str | Path) -> None:
        """Projector (safetensors) and the LM's LoRA adapter (peft format)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.projector.state_dict().items()}, folder / "projector.safetensors")
        if hasattr(self.language_model, "peft_config"):
            self.language_model.save_pretrained(folder / "lora")

    def load_adapters(self, folder: str | Path) -> None:
        """Load what :meth:`save_adapters` wrote into a model built on the same base LM (without adapters yet)."""
        from peft import PeftModel
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / "projector.safetensors").is_file():
            raise FileNotFoundError(f"{folder} has no projector.safetensors; pass a folder written by save_adapters().")
        self.projector.load_state_dict(load_file(folder / "projector.safetensors"))
        if (folder / "lora").is_dir():
            if hasattr(self.language_model, "peft_config"):
                raise ValueError("this model already has LoRA adapters; load adapters into a fresh ATokenLlava.")
            self.language_model = PeftModel.from_pretrained(self.language_model, folder / "lora")
