"""The tiny preset (2 + 2 blocks of width 64, 12 latent channels per 16 x 16 patch) trained on three real photographs
(scikit-image's astronaut, coffee and chelsea, random 64 px crops, L1 + KL) for 200 steps raises their reconstruction
PSNR by a clear margin: measured 11.24 dB -> 15.00 dB (about 5 s on 2 CPU cores); the test asserts +3 dB."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from atoken_diffusers.training import TrainConfig, Trainer
from atoken_diffusers.utils.media import load_image
from atoken_diffusers.utils.media_sets import bundled_folder
from atoken_diffusers.utils.metrics import psnr

pytestmark = pytest.mark.slow
NAMES = ("astronaut.png", "coffee.png", "chelsea.png")


def test_overfit_raises_psnr(tmp_path):
    files = [str(bundled_folder("skimage") / n) for n in NAMES]
    source = {"kind": "images", "paths": files, "sizes": [64]}
    config = TrainConfig.from_yaml("tiny_stage1", {
        "tasks": {"image": {"source": source, "batch_size": 3}}, "losses": {"lpips_vgg": None, "gram_vgg": None},
        "model.overrides": {"latent_channels": 12}, "optim.lr": 3e-3, "optim.min_lr": 3e-4, "optim.warmup_steps": 10,
        "optim.encoder_lr_mult": 1.0, "run.max_steps": 200, "run.checkpoint_every": 1000, "run.log_every": 20,
        "run.output_dir": str(tmp_path)})
    trainer = Trainer(config)
    images = torch.cat([F.interpolate(load_image(f), size=(64, 64), mode="bilinear", antialias=True) for f in files])

    def score() -> float:
        with torch.no_grad():
            return psnr(trainer.model.eval()(images).sample, images)

    before = score()
    records = trainer.train()
    after = score()
    print(f"PSNR {before:.2f} dB -> {after:.2f} dB")
    assert after > before + 3.0
    assert sum(r["loss"] for r in records[-10:]) < 0.7 * sum(r["loss"] for r in records[:10])
