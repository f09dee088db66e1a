"""``from_pretrained("org/name")`` with no network: a hub id resolves through a local Hugging Face cache (the layout
huggingface_hub writes: ``models--org--name/{blobs, refs/<branch>, snapshots/<commit>/...}``) when offline mode is on,
and gives the same model as loading the folder itself; ``subfolder=`` and ``revision=`` pick other files; a repository
that is not cached fails with a message naming it, without opening a socket. The cache is built here from
``save_pretrained`` output, so nothing is downloaded."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import load_file

from atoken_diffusers import AutoencoderAToken
from atoken_diffusers.conversion import load_original_gaussian_decoder
from atoken_diffusers.three_d.gaussian_decoder import ATokenGaussianDecoder
from tests.conftest import assert_same_run, real_image

REPO = Path(__file__).resolve().parents[1]
REPO_ID = "apple-test/atoken-tiny"


def add_snapshot(cache: Path, repo_id: str, folder: Path, commit: str, prefix: str = "",
                 refs: tuple[str, ...] = ("main",)) -> Path:
    """Put the files of ``folder`` (under ``prefix/`` in the repository) into a hub cache as revision ``commit``,
    stored once as content-addressed blobs with the snapshot holding relative symlinks, and point ``refs`` at it."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for source in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = source.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / prefix / source.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture()
def offline(monkeypatch):
    """Offline mode as HF_HUB_OFFLINE=1 sets it (huggingface_hub reads the variable at import, so its constant is set
    too), and every attempt to open a connection recorded and refused: the list must stay empty."""
    attempts = []

    def refuse(*args, **_kwargs):
        attempts.append(args)
        raise OSError("network access attempted in an offline test")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(socket.socket, "connect", lambda self, *a: refuse(*a))
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield attempts
    assert attempts == [], f"offline loading tried to connect: {attempts}"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A cache with two revisions of REPO_ID: "main" (commit A) holds the tiny model at the root; branch "v2"
    (commit B) holds a differently seeded one under ``vae/``. Returns (cache, {name: (folder, model)}, commits)."""
    root = tmp_path_factory.mktemp("hub")
    cache, commits, models = root / "cache", {"main": "a" * 40, "v2": "b" * 40}, {}
    for name, seed in (("main", 0), ("v2", 1)):
        torch.manual_seed(seed)
        model = AutoencoderAToken.from_preset("tiny").eval()
        folder = root / name
        model.save_pretrained(folder)
        models[name] = (folder, model)
    add_snapshot(cache, REPO_ID, models["main"][0], commits["main"])
    add_snapshot(cache, REPO_ID, models["v2"][0], commits["v2"], prefix="vae", refs=("v2",))
    return cache, models, commits


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@torch.inference_mode()
def _reconstruct(model: AutoencoderAToken, x: torch.Tensor) -> torch.Tensor:
    return model(x).sample


def test_hub_id_loads_from_the_cache_like_the_folder(hub, offline):
    cache, models, _ = hub
    folder, _ = models["main"]
    from_hub = AutoencoderAToken.from_pretrained(REPO_ID, cache_dir=cache).eval()
    from_folder = AutoencoderAToken.from_pretrained(folder).eval()
    assert from_hub.config["_name_or_path"] == REPO_ID  # what pipelines record as the model's origin
    assert {**from_hub.config, "_name_or_path": None} == {**from_folder.config, "_name_or_path": None}
    assert _same_weights(from_hub, from_folder)
    x = real_image(32, 48)
    assert_same_run(_reconstruct(from_hub, x), _reconstruct(from_folder, x))


def test_subfolder_and_revision(hub, offline):
    cache, models, commits = hub
    v2 = AutoencoderAToken.from_pretrained(REPO_ID, subfolder="vae", revision="v2", cache_dir=cache)
    assert _same_weights(v2, models["v2"][1]) and not _same_weights(v2, models["main"][1])
    by_commit = AutoencoderAToken.from_pretrained(REPO_ID, revision=commits["main"], cache_dir=cache)
    assert _same_weights(by_commit, models["main"][1])
    # main has no vae/ folder; diffusers' message names the repository and the file (not the subfolder)
    with pytest.raises(OSError, match=f"{REPO_ID} does not appear to have a file named config.json"):
        AutoencoderAToken.from_pretrained(REPO_ID, subfolder="vae", cache_dir=cache)


def test_missing_repo_fails_clearly_without_network(hub, offline):
    cache, _, _ = hub
    # diffusers' own message (no network was tried: the ``offline`` fixture checks that)
    with pytest.raises(OSError, match="apple-test/not-there does not appear to have a file named config.json"):
        AutoencoderAToken.from_pretrained("apple-test/not-there", cache_dir=cache)


def test_gaussian_decoder_hub_id(tmp_path, offline, parity_dir):
    gs = load_original_gaussian_decoder(parity_dir / "gs_decoder.pt", parity_dir / "gs_config.yaml").eval()
    gs.save_pretrained(tmp_path / "gs")
    add_snapshot(tmp_path / "cache", "apple-test/atoken-gs", tmp_path / "gs", "c" * 40)
    loaded = ATokenGaussianDecoder.from_pretrained("apple-test/atoken-gs", cache_dir=tmp_path / "cache").eval()
    assert _same_weights(loaded, gs)
    feats = load_file(parity_dir / "outputs.safetensors")["voxels.decoded_from_mean"][:, :768].float()
    coords = torch.nn.functional.pad(load_file(parity_dir / "inputs.safetensors")["voxel_coords"], (1, 0))
    with torch.inference_mode():
        assert_same_run(loaded(feats, coords).raw, gs(feats, coords).raw)


def test_environment_variables_alone(hub, tmp_path):
    """What a user does: HF_HUB_CACHE and HF_HUB_OFFLINE=1 in the environment, a plain from_pretrained(hub id) in a
    fresh interpreter (where huggingface_hub reads them at import)."""
    cache, models, _ = hub
    saved_dir = tmp_path / "saved"
    script = ("import sys; from atoken_diffusers import AutoencoderAToken; "
              f"AutoencoderAToken.from_pretrained({REPO_ID!r}).save_pretrained(sys.argv[1])")
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env.pop("HF_HOME", None)
    done = subprocess.run([sys.executable, "-c", script, str(saved_dir)], env=env, cwd=tmp_path, check=False,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    saved = load_file(saved_dir / "diffusion_pytorch_model.safetensors")
    expected = load_file(models["main"][0] / "diffusion_pytorch_model.safetensors")
    assert saved.keys() == expected.keys() and all(torch.equal(saved[k], expected[k]) for k in saved)
