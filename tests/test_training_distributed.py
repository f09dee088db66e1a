"""Two CPU processes under ``accelerate launch`` (DDP over gloo): a tiny stage 1 on real scikit-image photos and a
tiny stage 2 adding gradio's bundled mp4 clips; a stage-1 run killed mid-way and resumed logs exactly the losses of
the uninterrupted run.

See tests/processes.py for how two CPU processes are started and killed."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.processes import kill_tree, launch_cmd

pytestmark = pytest.mark.slow


def launch(*args: str) -> list[str]:
    return launch_cmd("atoken_diffusers", "train", *args)


def run(*args: str) -> str:
    out = subprocess.run(launch(*args), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout + out.stderr


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def stage1(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stage1")
    log = run("tiny_stage1", "--output-dir", str(out))
    assert log.count("done: step 12") == 1  # printed by the main process only
    return out


def test_stage1_two_processes(stage1):
    ckpts = sorted(p.name for p in (stage1 / "checkpoints").iterdir())
    assert ckpts == ["checkpoint-00000008", "checkpoint-00000012"]  # keep_checkpoints = 2
    assert {p.name for p in (stage1 / "checkpoints" / ckpts[-1]).iterdir()} >= {
        "model.safetensors", "random_states_0.pkl", "random_states_1.pkl", "training_state.pt"}
    assert (stage1 / "final" / "config.json").is_file()
    assert sorted(losses(stage1)) == list(range(1, 13))


def test_killed_run_resumes_to_the_same_losses(stage1, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(launch("tiny_stage1", "--output-dir", str(out)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (out / "checkpoints" / "checkpoint-00000004").is_dir():
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.1)
    kill_tree(proc.pid)
    proc.wait()
    assert not (out / "final").exists()  # really killed mid-way
    log = run("tiny_stage1", "--output-dir", str(out))
    assert "resumed from" in log
    expected, resumed = losses(stage1), losses(out)
    assert sorted(resumed) == sorted(expected)
    for step, value in expected.items():
        assert resumed[step] == pytest.approx(value, rel=1e-5, abs=1e-7), step


def test_stage2_grows_latents_and_adds_video(stage1, tmp_path):
    out = tmp_path / "stage2"
    run("tiny_stage2", "--output-dir", str(out), "--set", f"model.init_from={stage1 / 'final'}")
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["tasks"] for r in records[:1]] == [["image", "video"]]  # round robin inside gradient accumulation
    assert all("video/l1" in r["terms"] and "image/l1" in r["terms"] for r in records)
    config = json.loads((out / "final" / "config.json").read_text())
    assert config["latent_channels"] == 12
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-00000004", "checkpoint-00000008"]
