"""Zero-shot classification, retrieval and the MLLM path, with tiny random text models of the real architectures
(SigLIP text tower, Llama) built from configs: mechanics and gradients are checked, not quality."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from atoken_diffusers import AutoencoderAToken
from atoken_diffusers.losses import siglip_sigmoid_loss
from atoken_diffusers.understanding import (
    LOGIT_BIAS,
    LOGIT_SCALE,
    TextTower,
    ZeroShotClassifier,
    embed_visual,
    normalize_text,
    recall_at_k,
    siglip_logits,
)
from atoken_diffusers.understanding.mllm import ATokenLlava
from atoken_diffusers.understanding.mllm_training import train_projector_and_lora
from tests.conftest import assert_same_run
from tests.text_models import make_llama, make_siglip_text_tower, skimage_captions

LABELS = ["cat", "coffee cup", "rocket", "astronaut", "horse", "camera man"]


def _pixels(img: np.ndarray, size: int = 64) -> torch.Tensor:
    x = torch.from_numpy(img).float().permute(2, 0, 1)[None] / 127.5 - 1
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(-1, 1)


@pytest.fixture(scope="module")
def captioned():
    pairs = skimage_captions()
    return torch.cat([_pixels(img) for img, _ in pairs]), [cap for _, cap in pairs]


@pytest.fixture(scope="module")
def text_tower(tmp_path_factory, captioned):
    words = captioned[1] + LABELS + ["a photo of the video rendering good close up"]
    folder = make_siglip_text_tower(words, tmp_path_factory.mktemp("siglip_text"))
    return TextTower.from_pretrained(folder)


def test_text_normalisation_matches_the_official_rules():
    assert normalize_text("  A Photo_of &amp;amp; the CAT!!  ") == "a photo of the cat"
    assert normalize_text('Gray-level "camera" image.') == "graylevel camera image"


def test_embedding_parity_with_official(converted_dirs, parity_dir):
    from atoken_diffusers.tokens import voxels_to_tokens

    model = AutoencoderAToken.from_pretrained(converted_dirs["plain"]).eval()
    inputs, ref = load_file(parity_dir / "inputs.safetensors"), load_file(parity_dir / "outputs.safetensors")
    with torch.no_grad():
        for name in ("image_a", "image_b", "video"):
            torch.testing.assert_close(embed_visual(model, inputs[name]), ref[f"{name}.embed"], atol=1e-4, rtol=0)
        voxels = voxels_to_tokens(inputs["voxel_coords"], inputs["voxel_feats"])
        torch.testing.assert_close(embed_visual(model, voxels), ref["voxels.embed"], atol=1e-4, rtol=0)


def test_logits_follow_the_siglip_formula(tiny_model, text_tower, captioned):
    images, _ = captioned
    clf = ZeroShotClassifier(tiny_model, text_tower, LABELS, templates=("{}",))
    with torch.no_grad():
        v, t = tiny_model.embed(images), text_tower.encode(LABELS)
    direct = math.exp(4.8438) * (F.normalize(v, dim=-1) @ F.normalize(t, dim=-1).t()) - 15.5625
    torch.testing.assert_close(clf.logits(images), direct, atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(clf.probabilities(images), torch.sigmoid(direct), atol=1e-6, rtol=1e-5)
    assert (LOGIT_SCALE, LOGIT_BIAS) == (4.8438, -15.5625)
    top = clf.classify(images[:1], top_k=2)[0]
    assert len(top) == 2 and top[0][1] >= top[1][1] and top[0][0] in LABELS


def test_batching_and_caching_give_identical_results(tiny_model, text_tower, captioned, monkeypatch):
    images, _ = captioned
    clf = ZeroShotClassifier(tiny_model, text_tower, LABELS)
    calls = []
    monkeypatch.setattr(text_tower, "encode", lambda *a, **k: calls.append(1))  # labels must not be re-encoded
    batch = clf.logits(images)
    singles = torch.cat([clf.logits(images[i : i + 1]) for i in range(len(images))])
    assert_same_run(clf.logits(images), batch)
    assert calls == []
    torch.testing.assert_close(batch, singles, atol=1e-4, rtol=1e-6)


def test_short_contrastive_training_reaches_top1(text_tower, captioned):
    """Tiny AToken + tiny SigLIP text tower on six real captioned photographs: the gradient path works."""
    images, captions = captioned
    text_tower = TextTower(copy.deepcopy(text_tower.model), text_tower.tokenizer)  # leave the shared tower as built
    torch.manual_seed(0)
    model = AutoencoderAToken.from_preset("tiny").train()
    scale, bias = torch.nn.Parameter(torch.tensor(math.log(10.0))), torch.nn.Parameter(torch.tensor(-10.0))
    params = list(model.encoder.parameters()) + list(text_tower.model.parameters()) + [scale, bias]
    opt = torch.optim.Adam(params, lr=2e-3)
    text_tower.model.train()
    for _ in range(60):
        loss = siglip_sigmoid_loss(model.embed(images), text_tower.encode(captions), scale, bias)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        sim = siglip_logits(model.embed(images), text_tower.encode(captions), scale.item(), bias.item())
    assert torch.equal(sim.argmax(1), torch.arange(len(captions)))  # image -> its caption
    assert torch.equal(sim.argmax(0), torch.arange(len(captions)))  # caption -> its image
    recall = recall_at_k(model.embed(images).detach(), text_tower.encode(captions).detach(), ks=(1,))
    assert recall == {"text_to_visual_R@1": 1.0, "visual_to_text_R@1": 1.0}


def test_bad_inputs(tiny_model, text_tower, tmp_path):
    with pytest.raises(FileNotFoundError, match="text model path .* no config.json"):
        TextTower.from_pretrained(tmp_path / "missing")
    with pytest.raises(ValueError, match="labels is empty"):
        ZeroShotClassifier(tiny_model, text_tower, [" ", ""])
    with pytest.raises(ValueError, match="one caption per visual sample"):
        recall_at_k(torch.randn(3, 8), torch.randn(2, 8))
    with pytest.raises(ValueError, match="must share D"):
        siglip_logits(torch.randn(3, 8), torch.randn(2, 4))


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, captioned):
    words = captioned[1] + ["describe the image video what is this <image>"]
    return make_llama(words, tmp_path_factory.mktemp("llama"))


def test_mllm_trains_saves_reloads_and_generates(llama_dir, captioned, tmp_path):
    images, captions = captioned
    torch.manual_seed(0)
    atoken = AutoencoderAToken.from_preset("tiny")
    mllm = ATokenLlava.from_pretrained(atoken, llama_dir)
    samples = [(images[i : i + 1], "<image> describe the image", captions[i]) for i in range(len(captions))]
    losses = train_projector_and_lora(mllm, samples, steps=16, lr=1e-2, batch_size=3)
    assert sum(losses[-4:]) < 0.8 * sum(losses[:4]), losses  # falling, not noise
    frozen = [p for p in mllm.vision_tower.parameters() if p.requires_grad]
    assert frozen == []
    mllm.eval()
    mllm.save_adapters(tmp_path / "adapters")
    assert (tmp_path / "adapters" / "projector.safetensors").is_file() and (tmp_path / "adapters" / "lora").is_dir()

    reloaded = ATokenLlava.from_pretrained(atoken, llama_dir)
    reloaded.load_adapters(tmp_path / "adapters")
    reloaded.eval()
    with torch.no_grad():
        a = mllm(images[:2], ["describe the image"] * 2, captions[:2]).logits
        b = reloaded(images[:2], ["describe the image"] * 2, captions[:2]).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)

    text = reloaded.generate(images[:1], ["<image> what is this"], max_new_tokens=4, do_sample=False)
    assert len(text) == 1 and reloaded.last_generated_ids.shape[1] >= 1
    video = images[:1, :, None].repeat(1, 1, 8, 1, 1)
    reloaded.vision_tower.slowfast = True
    reloaded.generate(video, ["<image> describe the video"], max_new_tokens=4, do_sample=False)
    assert reloaded.last_generated_ids.shape[0] == 1 and reloaded.last_generated_ids.shape[1] >= 1
    with pytest.raises(ValueError, match="must match one to one"):
        reloaded.build_inputs(reloaded.vision_tower(images[:2]), ["describe"])


def test_cli_classify(converted_dirs, text_tower, tmp_path, capsys):
    from atoken_diffusers.cli.main import main
    from atoken_diffusers.utils.media import save_image
    from tests.conftest import real_image

    text_tower.model.save_pretrained(tmp_path / "text")
    text_tower.tokenizer.save_pretrained(tmp_path / "text")
    save_image(real_image(64, 64), tmp_path / "a.png")
    main(["classify", str(tmp_path / "a.png"), "--labels", "cat, rocket,astronaut", "--model",
          str(converted_dirs["plain"]), "--text-model", str(tmp_path / "text"), "--top-k", "2"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(line.split(maxsplit=1)[1] in {"cat", "rocket", "astronaut"} for line in lines)
    with pytest.raises(SystemExit, match="--labels is empty"):
        main(["classify", str(tmp_path / "a.png"), "--labels", " , ", "--model", str(converted_dirs["plain"]),
              "--text-model", str(tmp_path / "text")])
