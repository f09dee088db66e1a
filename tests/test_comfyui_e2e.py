"""End to end in a real ComfyUI (opt-in: set COMFYUI_DIR to a ComfyUI checkout; skipped otherwise).

The test builds (once, then reuses) a venv in ``$COMFYUI_DIR/.venv-atoken`` with torch 2.14.1 + torchvision 0.29.1
(ComfyUI imports torchvision at start-up), ComfyUI's other requirements (without torchaudio/spandrel: audio and
upscale nodes then fail to import, which ComfyUI tolerates; plus requests) and this project; starts ComfyUI with
``--cpu`` on 127.0.0.1 with only this node pack enabled; uploads a real photograph; runs LoadImage -> AToken Loader
-> AToken Encode -> AToken Decode -> SaveImage and the same through the built-in VAEEncode/VAEDecode; and checks the
saved images' PSNR against the input equals the PSNR of a direct reconstruction computed here.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atoken_diffusers.utils.metrics import psnr
from tests.conftest import real_image

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout")]

def _venv(comfy: Path) -> Path:
    venv = comfy / ".venv-atoken"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        # ComfyUI imports torchvision at start-up; this torch/torchvision pair is the one that installs here.
        subprocess.run(pip + ["torch==2.14.1", "torchvision==0.29.1"], check=True)
        req = [line for line in (comfy / "requirements.txt").read_text().splitlines()
               if line.strip() and not line.startswith("#")
               and line.split("=")[0].split(">")[0].strip() not in {"torch", "torchvision", "torchaudio", "spandrel"}]
        subprocess.run(pip + req + ["requests"], check=True)
        subprocess.run(pip + ["-e", f"{REPO}[threed]"], check=True)
    return python


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(url: str, data: bytes | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, data=data, headers=headers or {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read()


def _upload(base: str, name: str, png: bytes) -> None:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + png + f"\r\n--{boundary}--\r\n".encode()
    _request(f"{base}/upload/image", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})


def _run(base: str, graph: dict, timeout: float = 300) -> dict:
    prompt_id = json.loads(_request(f"{base}/prompt", json.dumps({"prompt": graph}).encode(),
                                    {"Content-Type": "application/json"}))["prompt_id"]
    deadline = time.time() + timeout
    while time.time() < deadline:
        history = json.loads(_request(f"{base}/history/{prompt_id}"))
        if prompt_id in history:
            entry = history[prompt_id]
            errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
            assert entry["status"]["status_str"] == "success", [
                (e.get("node_type"), e.get("exception_message"), "".join(e.get("traceback", [])[-3:])) for e in errors]
            return entry["outputs"]
        time.sleep(0.5)
    raise TimeoutError("ComfyUI did not finish the workflow")


def _saved(base: str, info: dict) -> torch.Tensor:
    query = urllib.parse.urlencode({k: info[k] for k in ("filename", "subfolder", "type")})
    img = np.asarray(Image.open(io.BytesIO(_request(f"{base}/view?{query}"))).convert("RGB"))
    return torch.from_numpy(img.copy()).float().permute(2, 0, 1)[None] / 127.5 - 1


def test_workflows_in_real_comfyui(tmp_path, converted_dirs):
    from atoken_diffusers import AutoencoderAToken

    comfy = Path(COMFYUI_DIR)
    python = _venv(comfy)
    base_dir = tmp_path / "base"
    for d in ("custom_nodes", "models/atoken", "input", "output"):
        (base_dir / d).mkdir(parents=True)
    (base_dir / "custom_nodes" / "comfyui_nodes").symlink_to(REPO / "comfyui_nodes")
    (base_dir / "models" / "atoken" / "tiny").symlink_to(converted_dirs["plain"])
    port = _free_port()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    server = subprocess.Popen(
        [str(python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
         "--base-directory", str(base_dir), "--output-directory", str(base_dir / "output"),
         "--database-url", "sqlite:///:memory:", "--disable-api-nodes", "--disable-all-custom-nodes",
         "--whitelist-custom-nodes", "comfyui_nodes"],
        cwd=comfy, env=env, stdout=open(tmp_path / "comfy.log", "w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                info = json.loads(_request(f"{base}/object_info/ATokenLoader"))
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError((tmp_path / "comfy.log").read_text()[-3000:])
        assert info["ATokenLoader"]["output"] == ["ATOKEN", "VAE"]

        x = real_image(64, 80)
        png = io.BytesIO()
        Image.fromarray(((x[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()).save(png, format="PNG")
        _upload(base, "astronaut.png", png.getvalue())
        graph = {
            "1": {"class_type": "LoadImage", "inputs": {"image": "astronaut.png"}},
            "2": {"class_type": "ATokenLoader", "inputs": {"model": "tiny", "dtype": "fp32", "device": "cpu"}},
            "3": {"class_type": "ATokenEncode", "inputs": {"atoken": ["2", 0], "image": ["1", 0], "as_video": False}},
            "4": {"class_type": "ATokenDecode", "inputs": {"atoken": ["2", 0], "samples": ["3", 0]}},
            "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "atoken_nodes"}},
            "6": {"class_type": "VAEEncode", "inputs": {"pixels": ["1", 0], "vae": ["2", 1]}},
            "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["2", 1]}},
            "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "atoken_builtin"}},
        }
        outputs = _run(base, graph)
        model = AutoencoderAToken.from_pretrained(converted_dirs["plain"]).eval()
        x8 = torch.from_numpy(np.asarray(Image.open(png)).copy()).float().permute(2, 0, 1)[None] / 127.5 - 1
        with torch.no_grad():
            direct = model(x8).sample.clamp(-1, 1)
        direct8 = ((direct + 1) * 127.5).round() / 127.5 - 1  # SaveImage writes 8-bit PNG
        expected = psnr(direct8, x8)
        for node in ("5", "8"):
            saved = _saved(base, outputs[node]["images"][0])
            assert saved.shape == x8.shape
            assert abs(psnr(saved, x8) - expected) < 0.05, (node, psnr(saved, x8), expected)
        (tmp_path / "result.json").write_text(json.dumps({"psnr": expected}))
    finally:
        server.terminate()
        server.wait(timeout=30)
