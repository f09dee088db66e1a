"""Load test of the served demo: 16 simultaneous ``gradio_client`` requests on 127.0.0.1 against `atoken demo` (a
separate server process, the tiny parity model) all finish with the right result, while the server's memory, sampled
with psutil during the run, stays within the bound that one-at-a-time requests give."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")
psutil = pytest.importorskip("psutil")

from tests.processes import kill_tree
from tests.test_demo import free_port, skimage_file

REQUESTS = 16
# Each request holds one small image's activations; the bound is far above one request (~tens of MB measured) and far
# below what 16 unbounded large requests would take, and catches a leak that grows with every request.
MEMORY_BOUND_MB = 400


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MB."""
    root = psutil.Process(pid)
    total = 0
    for p in [root, *root.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


class Sampler(threading.Thread):
    """Samples :func:`rss_mb` every ``every`` seconds until stopped; ``peak`` is the largest seen."""

    def __init__(self, pid: int, every: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.every, self.peak, self.samples = pid, every, 0.0, 0
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            self.samples += 1
            time.sleep(self.every)


@pytest.fixture(scope="module")
def server(tmp_path_factory, converted_dirs):
    root = tmp_path_factory.mktemp("load")
    port = free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(root / "gradio-cache"), "GRADIO_ANALYTICS_ENABLED": "False"}
    cmd = [sys.executable, "-m", "atoken_diffusers.cli.main", "demo", "--model", str(converted_dirs["fsq"]),
           "--device", "cpu", "--port", str(port)]
    with open(root / "server.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=Path(__file__).resolve().parents[1])
        try:
            yield _wait_until_served(proc, f"http://127.0.0.1:{port}/", root / "server.log"), proc.pid
        finally:
            kill_tree(proc.pid)


def _wait_until_served(proc, url: str, log: Path, seconds: float = 180) -> str:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the demo server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the demo server did not answer within {seconds:g} s")


def _images(folder: Path) -> list[Path]:
    """16 different 64 x 96 crops of a photograph, so that a result given to the wrong request shows."""
    from PIL import Image

    with Image.open(skimage_file("chelsea.png")) as im:
        photo = np.asarray(im.convert("RGB"))
    paths = []
    for i in range(REQUESTS):
        y, x = 8 * (i % 4) + 40, 16 * (i // 4) + 60
        path = folder / f"crop{i:02d}.png"
        Image.fromarray(photo[y : y + 64, x : x + 96]).save(path)
        paths.append(path)
    return paths


def test_16_concurrent_requests_are_all_right_with_bounded_memory(server, converted_dirs, tmp_path, capsys):
    from gradio_client import Client, handle_file

    from atoken_diffusers import AutoencoderAToken
    from atoken_diffusers.demo import tasks
    from atoken_diffusers.utils.media import load_image
    from atoken_diffusers.utils.metrics import psnr

    url, pid = server
    model_dir = str(converted_dirs["fsq"])
    paths = _images(tmp_path)
    baseline = rss_mb(pid)
    sampler = Sampler(pid)
    sampler.start()

    def request(path):
        return Client(url, verbose=False).predict(model_dir, handle_file(str(path)), api_name="/reconstruct_image")

    start = time.monotonic()
    with ThreadPoolExecutor(REQUESTS) as pool:
        results = list(pool.map(request, paths))
    seconds = time.monotonic() - start
    sampler.done.set()
    sampler.join()

    model = AutoencoderAToken.from_pretrained(model_dir).eval()
    for path, (cont, disc, _err, _latent, table, _summary) in zip(paths, results):
        x = load_image(path)
        direct = tasks.reconstruct_image(model, x).metrics
        rows = {row[0]: dict(zip(table["headers"], row)) for row in table["data"]}
        assert load_image(cont[0]).equal(x)  # this request's own picture came back
        for name, key, shown in (("continuous", "continuous", cont[1]), ("FSQ tokens", "discrete", disc[1])):
            assert rows[name]["PSNR (dB)"] == pytest.approx(direct[key]["psnr"], abs=1e-3)
            assert rows[name]["SSIM"] == pytest.approx(direct[key]["ssim"], abs=1e-3)
            assert psnr(load_image(shown), x) == pytest.approx(direct[key]["psnr"], abs=1e-3)
    growth = sampler.peak - baseline
    with capsys.disabled():
        print(f"\ndemo load: {REQUESTS} concurrent requests in {seconds:.1f} s; server RSS {baseline:.0f} MB before, "
              f"peak {sampler.peak:.0f} MB ({growth:+.0f} MB, {sampler.samples} samples)")
    assert sampler.samples > 10 and growth < MEMORY_BOUND_MB
