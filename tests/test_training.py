"""The trainer: configs, schedule, growth between stages, LoRA, 8-bit AdamW, the semantic losses, checkpoints.
Multi-process runs and exact resume are in test_training_distributed.py; the overfit check in
test_training_overfit.py."""

from __future__ import annotations

import pytest
import torch

from atoken_diffusers import AutoencoderAToken
from atoken_diffusers.training import TrainConfig, Trainer
from atoken_diffusers.training.checkpoint import clean_partial, latest_checkpoint
from atoken_diffusers.training.lora import load_lora, merge_lora
from atoken_diffusers.training.model_init import copy_overlapping
from atoken_diffusers.training.optimization import lr_factor, param_groups, task_cycle
from tests.conftest import assert_same_run, real_image

FAST = {"losses": {"perceptual_size": 32}, "run.max_steps": 3, "run.checkpoint_every": 100, "run.log_every": 1}


def quick_config(tmp_path, **overrides) -> TrainConfig:
    images = {"source": {"kind": "images", "paths": ["skimage"], "sizes": [32, 48], "exclude": ["*.tif"]},
              "batch_size": 2}
    return TrainConfig.from_yaml("tiny_stage1", {**FAST, "tasks": {"image": images},
                                                 "run.output_dir": str(tmp_path / "run"), **overrides})


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"unknown keys \['lerning_rate'\]"):
        TrainConfig.from_yaml("tiny_stage1", {"optim.lerning_rate": 1.0})
    with pytest.raises(FileNotFoundError, match="tiny_stage1"):
        TrainConfig.from_yaml(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="unknown task 'audio'"):
        TrainConfig.from_yaml("tiny_stage1", {"tasks": {"audio": {}}})
    assert TrainConfig.from_yaml("tiny_stage1", {"run.max_steps": 7}).run.max_steps == 7


def test_round_robin_and_schedule():
    assert task_cycle({"image": 2, "video": 1}) == ["image", "video", "image"]
    assert task_cycle({"image": 1, "video": 1, "3d": 1}) == ["image", "video", "3d"]
    cfg = TrainConfig().optim  # the paper's: 2k warm-up to 3e-4, cosine to 3e-5
    assert lr_factor(0, cfg, 100_000) == pytest.approx(1 / 2000)
    assert lr_factor(1999, cfg, 100_000) == pytest.approx(1.0)
    assert lr_factor(100_000, cfg, 100_000) * cfg.lr == pytest.approx(3e-5)
    groups = param_groups(AutoencoderAToken.from_preset("tiny"), cfg)
    assert sorted({g["lr"] for g in groups}) == pytest.approx([3e-5, 3e-4])  # encoder x0.1
    assert all(g["weight_decay"] == 0 for g in groups if all(p.ndim < 2 for p in g["params"]))


def test_grown_latent_reconstructs_like_the_smaller_model():
    torch.manual_seed(0)
    small = AutoencoderAToken.from_preset("tiny", latent_channels=8).eval()
    big = AutoencoderAToken.from_preset("tiny", latent_channels=12).eval()
    notes = copy_overlapping(big, small.state_dict())
    assert set(notes) == {"to_moments.weight", "decoder.proj_in.weight"}
    x = real_image(32, 48)
    with torch.no_grad():
        assert torch.allclose(big(x).sample, small(x).sample, atol=1e-5)
        assert_same_run(big.encode(x).latent_dist.mean[:, :8], small.encode(x).latent_dist.mean)


def test_growth_refuses_anything_but_latent_channels():
    small = AutoencoderAToken.from_preset("tiny", latent_channels=8)
    wider = AutoencoderAToken.from_preset("tiny", latent_channels=12, encoder_mlp_dim=192)
    with pytest.raises(ValueError, match="only the latent channels may grow"):
        copy_overlapping(wider, small.state_dict())
    with pytest.raises(ValueError, match="missing"):
        copy_overlapping(AutoencoderAToken.from_preset("tiny", encoder_depth=3), small.state_dict())


def test_random_crops_keep_the_requested_aspect():
    import numpy as np

    from atoken_diffusers.training.data import _random_crop

    img = np.zeros((600, 600, 3), np.uint8)
    rng = np.random.default_rng(0)
    for aspect in (96 / 160, 160 / 96):  # height / width
        ratios = np.array([c.shape[0] / c.shape[1] for c in (_random_crop(img, rng, aspect) for _ in range(50))])
        assert ((ratios < 1) == (aspect < 1)).all()  # wide stays wide, tall stays tall (the crop is then resized)
        assert abs(np.median(ratios) / aspect - 1) < 0.2, (aspect, np.median(ratios))


def test_lora_trains_only_adapters_saves_and_merges(tmp_path):
    torch.manual_seed(0)
    base_dir = tmp_path / "base"
    AutoencoderAToken.from_preset("tiny").save_pretrained(base_dir)
    config = quick_config(tmp_path, **{"model.init_from": str(base_dir), "model.overrides": {},
                                       "lora": {"rank": 4, "alpha": 4}, "run.ema_decay": 0.0})
    trainer = Trainer(config)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if "lora_" not in k)  # base weights frozen
    assert any(not torch.equal(before[k], after[k]) for k in before if "lora_B" in k)  # adapters learned
    x = real_image(32, 32)
    model = trainer.model.eval()
    with torch.no_grad():
        expected = model(x).sample
    fresh = AutoencoderAToken.from_pretrained(base_dir).eval()
    load_lora(fresh, tmp_path / "run" / "lora")
    with torch.no_grad():
        assert torch.allclose(fresh(x).sample, expected, atol=1e-5)
        merge_lora(fresh)
        assert not any("lora_" in k for k in fresh.state_dict())
        assert torch.allclose(fresh(x).sample, expected, atol=1e-4)


def test_eight_bit_adamw_on_cpu(tmp_path):
    import bitsandbytes as bnb

    trainer = Trainer(quick_config(tmp_path, **{"optim.eight_bit": True}))
    assert isinstance(trainer.optimizer.optimizer, bnb.optim.AdamW8bit)
    before = trainer.model.decoder.proj_out.weight.detach().clone()
    records = trainer.train()
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert not torch.equal(before, trainer.model.decoder.proj_out.weight)


def test_semantic_losses_with_teacher_and_text_tower(tmp_path):
    """Images distil a (tiny random) SigLIP vision teacher; videos use the sigmoid loss; both need captions embedded
    by a text tower of the embedding width (64 for the tiny preset)."""
    from transformers import SiglipVisionConfig, SiglipVisionModel

    from tests.text_models import make_siglip_text_tower

    torch.manual_seed(0)
    make_siglip_text_tower(["astronaut", "coffee", "cat", "rocket", "world", "video", "b"], tmp_path / "text")
    SiglipVisionModel(SiglipVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                         num_attention_heads=2, image_size=32, patch_size=16)).save_pretrained(tmp_path / "teacher")
    video = {"source": {"kind": "videos", "paths": ["gradio:videos"], "frames": 4, "sizes": [32],
                        "exclude": ["a.mp4", "*.avi"]}, "batch_size": 2}
    config = quick_config(tmp_path, **{"losses.text_model": str(tmp_path / "text"), "losses.teacher": str(tmp_path / "teacher"),
                                       "tasks.video": video, "run.max_steps": 2})
    records = Trainer(config).train()
    assert records[0]["tasks"] == ["image"] and records[1]["tasks"] == ["video"]
    assert records[0]["terms"]["image/semantic"] > 0 and records[1]["terms"]["video/semantic"] > 0
    with pytest.raises(ValueError, match="text_model"):
        Trainer(quick_config(tmp_path, **{"losses.teacher": str(tmp_path / "teacher")}))


def test_partial_checkpoints_are_never_resumed(tmp_path):
    ckpt = tmp_path / "checkpoints"
    (ckpt / "checkpoint-00000004").mkdir(parents=True)
    (ckpt / "checkpoint-00000008.tmp").mkdir()
    assert latest_checkpoint(tmp_path).name == "checkpoint-00000004"
    clean_partial(tmp_path)
    assert not (ckpt / "checkpoint-00000008.tmp").exists()


def test_cli_names_bad_config(capsys):
    from atoken_diffusers.cli.main import main

    with pytest.raises(SystemExit, match="neither a file nor a bundled config"):
        main(["train", "no_such_stage"])
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        main(["train", "tiny_stage1", "--set", "oops"])


def test_bundled_curriculum_configs_parse():
    from atoken_diffusers.training.config import CONFIG_DIR

    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert {"stage1_images", "stage2_video", "stage3_3d", "stage4_fsq", "tiny_stage1", "tiny_stage2"} <= set(names)
    stages = [TrainConfig.from_yaml(n) for n in ("stage1_images", "stage2_video", "stage3_3d", "stage4_fsq")]
    assert [sorted(s.tasks) for s in stages] == [["image"], ["image", "video"], ["3d", "image", "video"],
                                                  ["3d", "image", "video"]]
    assert [s.model.preset for s in stages] == ["so-c-s1", "so-c", "so-c", "so-d"]
    assert stages[0].losses.gram == 1000 and stages[0].losses.lpips == 10 and stages[0].losses.reconstruction == 0.2


def test_voxel_crops_are_cubes_around_an_occupied_voxel(tmp_path):
    import numpy as np

    from atoken_diffusers.three_d.voxelize import save_voxel_features
    from atoken_diffusers.training.config import SourceConfig
    from atoken_diffusers.training.data import VoxelSource, make_batch

    torch.manual_seed(0)
    coords = torch.unique(torch.randint(0, 64, (3000, 3)), dim=0)
    save_voxel_features(tmp_path / "asset.safetensors", coords, torch.randint(0, 256, (coords.shape[0], 768), dtype=torch.uint8))
    source = VoxelSource(SourceConfig(kind="voxels", paths=[str(tmp_path)], max_tokens=500))
    (kept, feats), caption = source.sample(np.random.default_rng(0))
    assert kept.shape[0] == 500 and feats.shape == (500, 768) and caption == "asset"
    dropped = coords[~(coords[:, None] == kept[None]).all(-1).any(1)]
    centre_candidates = [c for c in kept if (kept - c).abs().amax(1).max() <= (dropped - c).abs().amax(1).min()]
    assert centre_candidates  # some occupied voxel sees every kept voxel no farther than any dropped one
    batch = make_batch(source, 2, np.random.default_rng(1))
    assert batch.kind == "3d" and batch.tokens.feats.shape == (1000, 3072)
    assert [t.shape for t in batch.split(batch.tokens.feats)] == [(500, 768), (500, 768)]
