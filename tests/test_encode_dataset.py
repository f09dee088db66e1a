"""``encode-dataset`` (labelled shards, restart without recomputation, plan pinning, two processes killed and resumed)
and ``latent-stats``, on crops of real scikit-image photographs."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from atoken_diffusers import AutoencoderAToken
from atoken_diffusers.generation.data.encode_dataset import PAUSE_ENV, encode_dataset
from atoken_diffusers.generation.data.image_folder import load_batch
from atoken_diffusers.generation.data.latent_stats import latent_normalization, stats_from_shards
from atoken_diffusers.generation.data.shards import LatentShards
from tests.conftest import assert_same_run
from tests.generation_data import CROP
from tests.processes import kill_tree, launch_cmd


def shard_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("images-*.safetensors"))


def test_shards_hold_latents_tokens_and_labels(gen_data, one_thread):
    manifest = json.loads((gen_data.shards / "manifest.json").read_text())
    assert manifest["classes"] == ["cat", "space"]
    images = manifest["kinds"]["images"]
    assert images["count"] == 18 and images["class_counts"] == [9, 9] and images["latent_shape"] == [12, 3, 3]
    assert len(images["shards"]) == 9 and gen_data.summary == {"shards": 9, "encoded": 9, "skipped": 0,
                                                              "out": str(gen_data.shards)}
    data = LatentShards(gen_data.shards)
    files = sorted(gen_data.images.rglob("*.png"))
    assert data.tensors["labels"].tolist() == [0 if f.parent.name == "cat" else 1 for f in files]
    vae = AutoencoderAToken.from_pretrained(gen_data.vae).eval()
    x = load_batch(files, CROP)
    with torch.no_grad():
        mean = vae.encode(x).latent_dist.mode()
    torch.testing.assert_close(data.tensors["latents"], mean, rtol=1e-5, atol=1e-5)
    assert torch.equal(data.tensors["indices"].long(), vae.tokenize(x))
    assert data.tensors["indices"].dtype == torch.int16  # 4096 codes fit
    # the on-demand reader returns the same samples as the in-memory one
    lazy = LatentShards(gen_data.shards, in_memory=False)
    pick = torch.tensor([17, 0, 5, 4])
    for key, value in lazy.batch(pick).items():
        assert torch.equal(value, data.batch(pick)[key]), key


def test_rerun_skips_finished_shards_and_cleans_partial_files(gen_data, tmp_path, one_thread):
    out = tmp_path / "shards"
    shutil.copytree(gen_data.shards, out)
    (out / "manifest.json").unlink()
    (out / "images-00004.safetensors").unlink()  # as if killed before this shard was renamed into place ...
    (out / ".images-00004.safetensors.tmp-123").write_bytes(b"half a shard")  # ... with its temporary file left
    before = {p.name: p.stat().st_mtime_ns for p in shard_files(out)}
    summary = encode_dataset(gen_data.images, gen_data.vae, out, resolution=CROP, shard_size=2, batch_size=4)
    assert summary["encoded"] == 1 and summary["skipped"] == 8
    assert {p.name: p.stat().st_mtime_ns for p in shard_files(out) if p.name in before} == before  # untouched
    assert not list(out.glob(".*tmp*"))
    assert (out / "manifest.json").read_text() == (gen_data.shards / "manifest.json").read_text()
    name = "images-00004.safetensors"
    redone, reference = load_file(out / name), load_file(gen_data.shards / name)
    assert redone.keys() == reference.keys()
    for key in redone:  # integer tensors (indices, labels) exact; latents within run-to-run float noise
        if redone[key].is_floating_point():
            assert_same_run(redone[key], reference[key])
        else:
            assert torch.equal(redone[key], reference[key]), key


def test_a_different_plan_is_refused_unless_overwrite(gen_data, tmp_path, one_thread):
    out = tmp_path / "shards"
    shutil.copytree(gen_data.shards, out)
    with pytest.raises(FileExistsError, match="different dataset.*--overwrite"):
        encode_dataset(gen_data.images, gen_data.vae, out, resolution=32, shard_size=2)
    summary = encode_dataset(gen_data.images, gen_data.vae, out, resolution=32, shard_size=9, overwrite=True)
    assert summary == {"shards": 2, "encoded": 2, "skipped": 0, "out": str(out)}
    assert len(shard_files(out)) == 2 and LatentShards(out).latent_shape == (12, 2, 2)


def test_bad_arguments_name_the_fix(gen_data, tmp_path):
    with pytest.raises(ValueError, match=r"--resolution 40 is not a positive multiple of 16.*use 32 or 48"):
        encode_dataset(gen_data.images, gen_data.vae, tmp_path / "a", resolution=40)
    with pytest.raises(ValueError, match=r"--frames 6 must be a positive multiple of 4"):
        encode_dataset(gen_data.images, gen_data.vae, tmp_path / "b", resolution=32, videos=True, frames=6)
    with pytest.raises(FileNotFoundError, match="--model .*config.json"):
        encode_dataset(gen_data.images, tmp_path, tmp_path / "c", resolution=32)
    with pytest.raises(FileNotFoundError, match="no manifest.json.*encode-dataset"):
        LatentShards(tmp_path)


def run_cli(module, *argv: str) -> None:
    parser = argparse.ArgumentParser()
    module.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    args.func(args)


def test_latent_stats_from_shards_and_from_images(gen_data, tmp_path, one_thread, capsys):
    from atoken_diffusers.cli import latent_stats as cli

    latents = LatentShards(gen_data.shards).tensors["latents"]
    mean, std = stats_from_shards(gen_data.shards)
    torch.testing.assert_close(mean, latents.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(std, latents.double().std((0, 2, 3), unbiased=False).float(), rtol=1e-4, atol=1e-6)

    model = tmp_path / "vae"
    shutil.copytree(gen_data.vae, model)
    assert latent_normalization(AutoencoderAToken.load_config(model)) is None
    run_cli(cli, "latent-stats", str(gen_data.shards), "--model", str(model))
    stored = latent_normalization(AutoencoderAToken.from_pretrained(model).config)
    torch.testing.assert_close(stored[0], mean, atol=1e-6, rtol=0)
    # encoding the image folder on the fly gives the same statistics
    run_cli(cli, "latent-stats", str(gen_data.images), "--model", str(model), "--resolution", str(CROP))
    again = latent_normalization(AutoencoderAToken.load_config(model))
    torch.testing.assert_close(again[1], stored[1], atol=1e-5, rtol=1e-4)
    assert "wrote latents_mean/latents_std (12 channels" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--resolution 20 is not a positive multiple of 16"):
        run_cli(cli, "latent-stats", str(gen_data.images), "--model", str(model), "--resolution", "20")


def launch(*args: str) -> list[str]:
    return launch_cmd("atoken_diffusers", "encode-dataset", *args, port_base=29700)


@pytest.mark.slow
def test_two_processes_killed_mid_way_resume_to_the_single_process_result(gen_data, tmp_path):
    out = tmp_path / "shards"
    args = (str(gen_data.images), "--model", str(gen_data.vae), "--out", str(out), "--resolution", str(CROP),
            "--shard-size", "2", "--batch-size", "4")
    env = {**os.environ, PAUSE_ENV: "1", "OMP_NUM_THREADS": "1"}  # each process stops inside its second shard
    proc = subprocess.Popen(launch(*args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while len(shard_files(out)) < 2 or len(list(out.glob(".*.tmp-*"))) < 2:
        if proc.poll() is not None or time.time() > deadline:
            raise AssertionError(f"the run ended or stalled before the pause point: {proc.stderr.read()[-3000:]}")
        time.sleep(0.1)
    kill_tree(proc.pid)
    proc.wait()
    done = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shard_files(out)}
    assert sorted(done) == ["images-00000.safetensors", "images-00001.safetensors"]  # one per process
    assert not (out / "manifest.json").exists()
    for name in done:  # what was renamed into place is complete
        assert load_file(out / name)["latents"].shape == (2, 12, 3, 3)

    result = subprocess.run(launch(*args), env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "7 encoded now, 2 already complete" in result.stdout and "2 process(es)" in result.stdout
    for name, stamp in done.items():  # not recomputed: the same files, never rewritten
        assert ((out / name).stat().st_ino, (out / name).stat().st_mtime_ns) == stamp, name
    assert not list(out.glob(".*tmp*"))
    single = LatentShards(gen_data.shards).tensors
    double = LatentShards(out).tensors
    assert torch.equal(double["labels"], single["labels"])
    assert torch.equal(double["indices"], single["indices"])
    torch.testing.assert_close(double["latents"], single["latents"], rtol=1e-5, atol=1e-6)
