"""``atoken evaluate``: the held-out figures of ``python -m atoken_diffusers.weights.evaluate`` come out of the
command unchanged; diffusers peers and fitted PCA rows sit beside the models; reruns reuse stored results; a
two-process run gives the single-process table; bad inputs get one line and leave no table behind.

Models are tiny random ones (an AToken ``tiny`` preset with 48 latent channels, so the shipped PCA-48 files apply, and
a 2x AutoencoderKL built from a config); feature networks are random-weight networks of the right architecture.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

from atoken_diffusers import AutoencoderAToken
from atoken_diffusers.cli.errors import CommandError
from atoken_diffusers.cli.main import main
from atoken_diffusers.evaluation.autoencoders import model_spec
from atoken_diffusers.evaluation.datasets import Protocol, discover
from atoken_diffusers.evaluation.feature_networks import FeatureNetworks
from atoken_diffusers.evaluation.i3d import I3D
from atoken_diffusers.evaluation.runner import Evaluation, evaluate
from atoken_diffusers.losses.lpips import LPIPS
from atoken_diffusers.utils.atomic import save_atomically
from atoken_diffusers.utils.media import save_image
from atoken_diffusers.weights import default_model_dir
from tests.conftest import real_image
from tests.processes import launch_cmd
from tests.test_evaluate_metrics import he_initialised


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """A tiny AToken folder, a tiny 4x AutoencoderKL folder, three photographs and a one-photograph PCA fitting set."""
    root = tmp_path_factory.mktemp("evaluate")
    torch.manual_seed(0)
    tiny = save_atomically(AutoencoderAToken.from_preset("tiny", latent_channels=48).eval(), root / "tiny")
    kl = AutoencoderKL(block_out_channels=(8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 3,
                       up_block_types=("UpDecoderBlock2D",) * 3, latent_channels=4, norm_num_groups=8,
                       layers_per_block=1)
    peer = save_atomically(kl, root / "kl-4x")
    photos, fit = root / "photos", root / "fit"
    img = real_image(128, 160)
    for i, (top, left) in enumerate([(0, 0), (40, 60), (64, 100)]):
        save_image(img[..., top:top + 48, left:left + 56], photos / f"p{i}.png")
    save_image(img[..., :64, :], fit / "f0.png")  # 4 views x 64 patches: enough for a 64-float PCA
    return {"tiny": tiny, "kl": peer, "photos": photos, "fit": fit, "root": root}


def run_cli(*argv: str) -> dict:
    """``atoken ARGV`` (which must write ``--output X.md``): the JSON report written beside it."""
    assert main(list(argv)) is None  # the console script exits with this value: anything else is printed
    return json.loads(Path(argv[argv.index("--output") + 1]).with_suffix(".json").read_text())


def rows_by_name(report: dict) -> dict[str, dict]:
    return {f"{r['name']}/{r['kind']}": r for r in report["rows"]}


def test_held_out_photographs_reproduce_weights_evaluate(tmp_path):
    from atoken_diffusers.weights.evaluate import evaluate_images, evaluate_images_pca

    model_dir = default_model_dir()
    report = run_cli("--quiet", "evaluate", "atoken:held-out", "--model", str(model_dir), "--output",
                     str(tmp_path / "t.md"))
    rows = rows_by_name(report)
    assert set(rows) == {"atoken-small/images", "PCA-48/images"} and rows["PCA-48/images"]["items"] == 10
    model = AutoencoderAToken.from_pretrained(model_dir).eval()
    for name, expected in (("atoken-small/images", evaluate_images(model)), ("PCA-48/images", evaluate_images_pca())):
        for key in ("psnr", "ssim"):
            assert rows[name][key] == pytest.approx(expected[key], rel=1e-6, abs=1e-6), (name, key)
            for photo, scores in expected["per_image"].items():
                assert rows[name]["per_item"][photo][key] == pytest.approx(scores[key], rel=1e-6, abs=1e-6)
    table = (tmp_path / "t.md").read_text()
    assert f"| atoken-small | images | 10 | 16x16x4, 48 | 48 | {rows['atoken-small/images']['psnr']:.2f} |" in table


def lpips_files(folder: Path) -> list[str]:
    """Random LPIPS weights in the published formats: torchvision vgg16 keys and the LPIPS head keys."""
    lpips = LPIPS()
    vgg, heads = folder / "vgg16.safetensors", folder / "lpips_vgg.safetensors"
    save_file({f"features.{k}": v.contiguous() for k, v in lpips.backbone.features.state_dict().items()}, str(vgg))
    save_file({f"lin{i}.model.1.weight": getattr(lpips, f"lin{i}").clone() for i in range(5)}, str(heads))
    return ["--lpips-vgg", str(vgg), "--lpips-heads", str(heads)]


def test_peers_fitted_pca_lpips_and_resume(folders, tmp_path, capsys):
    args = ["evaluate", str(folders["photos"]), "--model", str(folders["tiny"]), "--peer", str(folders["kl"]),
            "--resolution", "32", "--pca-fit", str(folders["fit"]), "--output", str(tmp_path / "t.md"),
            *lpips_files(tmp_path)]
    first = run_cli(*args, "--limit", "2")
    rows = rows_by_name(first)
    assert list(rows) == ["tiny/images", "kl-4x/images", "PCA-48/images", "PCA-64/images"]
    assert first["computed"] == 4 * 2
    assert rows["kl-4x/images"]["compression"] == {"spatial": 4, "temporal": 1, "channels": 4, "bits_per_token": None}
    assert rows["PCA-64/images"]["floats_per_patch"] == rows["kl-4x/images"]["floats_per_patch"] == 64
    # fitted on a photograph, the 64-float PCA beats the random autoencoders it stands beside
    assert rows["PCA-64/images"]["psnr"] > max(rows["kl-4x/images"]["psnr"], rows["tiny/images"]["psnr"])
    assert all(0 < r["lpips"] and r["seconds"] > 0 for r in rows.values())
    capsys.readouterr()

    second = run_cli(*args)  # one more photograph: only its results are computed
    assert second["computed"] == 4 and all(r["items"] == 3 for r in second["rows"])
    out = capsys.readouterr().out
    assert "reused 8 results" in out and "rFID (--inception)" in out and "| not computed |" in out
    for name, row in rows_by_name(second).items():
        for photo, scores in rows[name]["per_item"].items():
            assert row["per_item"][photo] == scores  # stored results, not recomputed


def test_videos_get_rfvd_beside_the_video_pca(folders, tmp_path):
    items = discover(["gradio:videos"], ("videos",), limit=2)
    nets = FeatureNetworks(i3d=he_initialised(I3D(input_size=32)))
    report = evaluate(Evaluation(items, [model_spec(str(folders["tiny"]))], tmp_path, Protocol(32, "crop", 8), nets))
    rows = rows_by_name(report)
    assert set(rows) == {"tiny/videos", "PCA-48/videos"}
    assert rows["PCA-48/videos"]["compression"]["temporal"] == 4 and rows["tiny/videos"]["items"] == 2
    assert all(r["rfvd"] > 0 for r in rows.values())
    assert report["not_computed"] == ["LPIPS (--lpips-vgg and --lpips-heads)"]


@pytest.fixture()
def bad_inputs(folders, tmp_path) -> Path:
    (tmp_path / "empty").mkdir()
    mixed = tmp_path / "mixed"
    save_image(real_image(32, 32), mixed / "a.png")
    (mixed / "b.png").write_text("not an image")
    save_file({"fc.weight": torch.zeros(3, 3)}, str(tmp_path / "inception.safetensors"))
    return tmp_path


# (arguments after `evaluate`, with {d} the temporary folder and {tiny}/{kl} the model folders; status; message)
BAD = [
    ("{d}/nope --model {tiny}", 2, r"DATA: media path .*nope.* matches nothing"),
    ("{d}/empty --model {tiny}", 2, r"DATA .*empty: no images/videos/meshes files"),
    ("{d}/mixed --model {tiny} --resolution 32", 1, r"b\.png: unreadable image .*not a readable image"),
    ("{d}/mixed --model {tiny} --inception {d}/missing.pth", 2, r"--inception .*missing\.pth: no such file"),
    ("{d}/mixed --model {tiny} --inception {d}/inception.safetensors", 1,
     r"inception\.safetensors: not FID Inception-v3 .* weights \(missing \['Conv2d_1a_3x3"),
    ("{d}/mixed --model {kl}", 2, r"--model .*kl-4x is a AutoencoderKL folder; .* --peer"),
    ("{d}/mixed --model {d}/empty", 2, r"--model .*empty: no config\.json"),
    ("{d}/mixed --model {tiny} --output {d}/t.txt", 2, r"--output .*t\.txt: the table is Markdown"),
]


@pytest.mark.parametrize("argv, status, message", BAD, ids=[b[2][:30] for b in BAD])
def test_bad_inputs_give_one_line_and_no_table(bad_inputs, folders, capsys, argv, status, message):
    argv = argv.format(d=bad_inputs, tiny=folders["tiny"], kl=folders["kl"])
    if "--output" not in argv:
        argv += f" --output {bad_inputs}/t.md"
    with pytest.raises(CommandError) as err:
        main(["evaluate", *argv.split()])
    assert err.value.code == status
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("atoken evaluate: "), lines
    assert __import__("re").search(message, lines[0]), lines[0]
    assert not (bad_inputs / "t.md").exists() and not (bad_inputs / "t.json").exists()


@pytest.mark.slow
def test_two_processes_give_the_single_process_table(folders, tmp_path):
    args = [str(folders["photos"]), "--model", str(folders["tiny"]), "--resolution", "32"]
    single = run_cli("--quiet", "evaluate", *args, "--output", str(tmp_path / "one.md"))
    cmd = launch_cmd("atoken_diffusers", "--quiet", "evaluate", *args, "--output", str(tmp_path / "two.md"))
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    double = json.loads((tmp_path / "two.json").read_text())
    assert double["computed"] == single["computed"] == 2 * 3

    def without_time(report):
        return [{k: ({n: {m: v for m, v in s.items() if m != "seconds"} for n, s in r["per_item"].items()}
                     if k == "per_item" else v) for k, v in r.items() if k != "seconds"} for r in report["rows"]]

    assert without_time(double) == without_time(single)
