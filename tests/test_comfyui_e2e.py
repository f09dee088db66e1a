"""End to end in a real ComfyUI (opt-in: set COMFYUI_DIR to a ComfyUI checkout; skipped otherwise).

The test builds (once, then reuses) a venv in ``$COMFYUI_DIR/.venv-atoken`` with torch 2.14.1 + torchvision 0.29.1
(ComfyUI imports torchvision at start-up), ComfyUI's other requirements (without torchaudio/spandrel: audio and
upscale nodes then fail to import, which ComfyUI tolerates; plus requests) and the pack's requirements.txt with this
checkout as atoken-diffusers; starts ComfyUI with
``--cpu`` on 127.0.0.1 with only this node pack enabled; and runs every shipped example workflow as ComfyUI serves it
(``/api/workflow_templates/...``, UI format, converted here to the API format that ``/prompt`` takes) on inputs whose
sides are not multiples of 16: a 424 x 360 photograph and a 9-frame 424 x 360 video (lossless), and a mesh. Saved
images and frames must be 416 x 352 (ComfyUI's centre crop), 9 frames must come back 9, and their PSNR against the
input must equal that of a direct reconstruction computed here (the splat must equal a direct conversion).
"""

from __future__ import annotations

import io
import json
import os
import shutil
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

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
REPO = Path(__file__).resolve().parents[1]
PACK = "comfyui_nodes"
WORKFLOWS = sorted(p.stem for p in (REPO / PACK / "example_workflows").glob("*.json"))
SIZE, CROPPED = (360, 424), (352, 416)  # (H, W): not multiples of 16 -> ComfyUI's centre crop
FRAMES = 9  # 4k + 1: Wan 2.2's count, every frame comes back
DECODERS = {"VAEDecode", "VAEDecodeTiled", "ATokenDecode"}
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout")]


def _venv(comfy: Path) -> Path:
    venv = comfy / ".venv-atoken"
    python = venv / "bin" / "python"
    pip = [str(python), "-m", "pip", "install", "-q"]
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        # ComfyUI imports torchvision at start-up; this torch/torchvision pair is the one that installs here.
        subprocess.run(pip + ["torch==2.14.1", "torchvision==0.29.1"], check=True)
        req = [line for line in (comfy / "requirements.txt").read_text().splitlines()
               if line.strip() and not line.startswith("#")
               and line.split("=")[0].split(">")[0].strip() not in {"torch", "torchvision", "torchaudio", "spandrel"}]
        subprocess.run(pip + req + ["requests"], check=True)
    # The pack's requirements.txt (what ComfyUI-Manager installs), with this checkout for atoken-diffusers.
    wanted = (REPO / PACK / "requirements.txt").read_text().replace("atoken-diffusers", f"-e {REPO}")
    stamp = venv / "atoken-requirements.txt"
    if not stamp.exists() or stamp.read_text() != wanted:
        stamp.with_suffix(".in").write_text(wanted)
        subprocess.run(pip + ["-r", str(stamp.with_suffix(".in"))], check=True)
        stamp.write_text(wanted)
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


def _run(base: str, graph: dict, timeout: float = 600) -> dict:
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


def _is_widget(spec) -> bool:
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    return (isinstance(kind, list) or kind in {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}) and not options.get(
        "forceInput")


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """A UI-format workflow (what the frontend saves) -> the API format ``/prompt`` takes: widget values are matched
    to the widget inputs in ComfyUI's declared order (an upload button or a seed's control_after_generate keeps one
    extra value), linked inputs become [source node id, output slot], notes are dropped."""
    links = {link[0]: link for link in workflow["links"]}
    graph = {}
    for node in workflow["nodes"]:
        if node["type"] not in object_info:
            assert node["type"] in {"Note", "MarkdownNote"}, f"node type {node['type']} is not installed"
            continue
        info = object_info[node["type"]]
        specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        order = info.get("input_order", {})
        names = order.get("required", []) + order.get("optional", []) or list(specs)
        values, inputs = list(node.get("widgets_values") or []), {}
        for name in (n for n in names if _is_widget(specs[n])):
            options = specs[name][1] if len(specs[name]) > 1 else {}
            inputs[name] = values.pop(0)
            if any(options.get(key) for key in ("image_upload", "video_upload", "control_after_generate")):
                values.pop(0)
        assert not values, f"{node['type']} has unused widget values {values}"
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                _, src, src_slot, *_ = links[slot["link"]]
                inputs[slot["name"]] = [str(src), src_slot]
        graph[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return graph


def _probe_decoders(graph: dict) -> dict[str, str]:
    """Add a lossless SaveImage after every decode node; returns {probe id: decoder id}."""
    probes = {}
    for node_id in [k for k, v in graph.items() if v["class_type"] in DECODERS]:
        probe = f"probe{node_id}"
        graph[probe] = {"class_type": "SaveImage", "inputs": {"images": [node_id, 0], "filename_prefix": probe}}
        probes[probe] = node_id
    return probes


def _saved(base: str, info: dict) -> torch.Tensor:
    """An output image -> (1, 3, H, W) in [-1, 1]."""
    query = urllib.parse.urlencode({k: info[k] for k in ("filename", "subfolder", "type")})
    img = np.asarray(Image.open(io.BytesIO(_request(f"{base}/view?{query}"))).convert("RGB"))
    return torch.from_numpy(img.copy()).float().permute(2, 0, 1)[None] / 127.5 - 1


def _media(input_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """example.png (a real photograph) and example.mp4 (9 frames panning over it by 1 px a frame, lossless RGB) at
    424 x 360; returns them as (1, 3, H, W) and (1, 3, T, H, W) in [-1, 1]."""
    import av
    from skimage import data

    photo = data.astronaut()
    frames = np.stack([photo[i : i + SIZE[0], i : i + SIZE[1]] for i in range(FRAMES)])
    Image.fromarray(frames[0]).save(input_dir / "example.png")
    with av.open(str(input_dir / "example.mp4"), "w", format="mp4") as container:
        stream = container.add_stream("libx264rgb", rate=8, options={"crf": "0", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = SIZE[1], SIZE[0], "rgb24"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    video = torch.from_numpy(frames).float().permute(3, 0, 1, 2)[None] / 127.5 - 1
    return video[:, :, 0], video


def _centre(x: torch.Tensor) -> torch.Tensor:
    """ComfyUI's crop of the last two dims down to multiples of 16."""
    top, left = (SIZE[0] % 16) // 2, (SIZE[1] % 16) // 2
    return x[..., top : top + CROPPED[0], left : left + CROPPED[1]]


def _to_8bit(x: torch.Tensor) -> torch.Tensor:
    return ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1  # SaveImage writes 8-bit PNG


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A ComfyUI server with only this pack; yields (base url, base directory)."""
    comfy = Path(COMFYUI_DIR)
    python = _venv(comfy)
    base_dir = tmp_path_factory.mktemp("comfy")
    for d in ("custom_nodes", "models/atoken", "input", "output"):
        (base_dir / d).mkdir(parents=True)
    (base_dir / "custom_nodes" / PACK).symlink_to(REPO / PACK)
    port = _free_port()
    log = base_dir / "comfy.log"
    proc = subprocess.Popen(
        [str(python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
         "--base-directory", str(base_dir), "--output-directory", str(base_dir / "output"),
         "--database-url", "sqlite:///:memory:", "--disable-api-nodes", "--disable-all-custom-nodes",
         "--whitelist-custom-nodes", PACK],
        cwd=comfy, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                _request(f"{base}/object_info/ATokenLoader")
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError(log.read_text()[-3000:])
        yield base, base_dir
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_every_example_workflow_runs_in_real_comfyui(server):
    from atoken_diffusers import AutoencoderAToken
    from atoken_diffusers.three_d.gaussian_decoder import ATokenGaussianDecoder
    from atoken_diffusers.three_d.gaussians import Gaussians
    from atoken_diffusers.three_d.pipeline import gaussians_from_voxels, pack_mesh
    from atoken_diffusers.weights import default_gs_decoder_dir, default_model_dir
    from tests.test_three_d import media_mesh

    base, base_dir = server
    assert sorted(json.loads(_request(f"{base}/workflow_templates"))[PACK]) == WORKFLOWS == [
        "3d", "image", "tokens", "video"]
    object_info = json.loads(_request(f"{base}/object_info"))
    assert object_info["ATokenLoader"]["output"] == ["ATOKEN", "VAE"]
    image, video = _media(base_dir / "input")
    _upload(base, "example.png", (base_dir / "input" / "example.png").read_bytes())  # as a user would
    shutil.copy(media_mesh("Bunny.obj"), base_dir / "input" / "bunny.obj")

    models = {fsq: AutoencoderAToken.from_pretrained(default_model_dir(discrete=fsq)).eval() for fsq in (False, True)}
    with torch.no_grad():
        expected = {  # direct reconstructions of the cropped inputs, per (workflow, decoder type)
            ("image", "VAEDecode"): models[False](_centre(image)).sample,
            ("image", "ATokenDecode"): models[False](_centre(image)).sample,
            ("image", "VAEDecodeTiled"): models[False](_centre(image), tiling=True, tile_sample_min_size=256,
                                                       tile_overlap_factor=0.25).sample,
            ("tokens", "VAEDecode"): models[True](_centre(image)).sample,
            ("video", "VAEDecode"): models[False](_centre(video)).sample,
        }
    report = {}
    for name in WORKFLOWS:
        workflow = json.loads(_request(f"{base}/api/workflow_templates/{PACK}/{name}.json"))
        graph = ui_to_api(workflow, object_info)
        probes = _probe_decoders(graph)
        outputs = _run(base, graph)
        for probe, decoder in probes.items():
            frames = torch.cat([_saved(base, info) for info in outputs[probe]["images"]])  # (T, 3, H, W)
            want = expected[(name, graph[decoder]["class_type"])]
            want = want[0].movedim(1, 0) if want.ndim == 5 else want  # video (1, 3, T, H, W) -> (T, 3, H, W)
            source = _centre(video[0].movedim(1, 0) if name == "video" else image)
            assert frames.shape == want.shape == (FRAMES if name == "video" else 1, 3, *CROPPED), (name, decoder)
            got, ref = psnr(frames, source), psnr(_to_8bit(want), source)
            assert abs(got - ref) < 0.05 and ref > 15, (name, graph[decoder]["class_type"], got, ref)
            report[f"{name}/{graph[decoder]['class_type']}"] = round(got, 2)
        if name == "video":
            info = next(v for v in outputs.values() if v.get("images") and v["images"][0]["filename"].endswith(".mp4"))
            saved = base_dir / "output" / info["images"][0]["subfolder"] / info["images"][0]["filename"]
            import av

            with av.open(str(saved)) as container:
                shapes = [f.to_ndarray(format="rgb24").shape for f in container.decode(video=0)]
            assert shapes == [(*CROPPED, 3)] * FRAMES
        if name == "3d":
            (rel,) = next(v["result"] for v in outputs.values() if "result" in v)[:1]
            splat = Gaussians.load_ply(base_dir / "output" / rel)
            gs = ATokenGaussianDecoder.from_pretrained(default_gs_decoder_dir()).eval()
            with torch.no_grad():
                direct = gaussians_from_voxels(models[False], gs, *pack_mesh(base_dir / "input" / "bunny.obj"))
            assert len(splat) == len(direct) > 0 and len(splat) % 32 == 0
            torch.testing.assert_close(splat.xyz, direct.xyz, atol=1e-4, rtol=0)
            report["3d/gaussians"] = len(splat)
    (base_dir / "result.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
