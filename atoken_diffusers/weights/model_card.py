"""Write ``MODEL_CARD.md`` of the embedded default from ``metrics.json`` and the training runs' logs (called by
``build``; ``python -m atoken_diffusers.weights.model_card [--run-dir runs/embedded]`` rewrites it)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import WEIGHTS_DIR

CARD = """# atoken-small (embedded default of atoken-diffusers)

A small AToken — the architecture of Apple's AToken (arXiv 2509.14476) at a size a laptop CPU can train — trained by
this project from scratch on two CPU cores, so that `atoken reconstruct`, `atoken demo`, the Gradio app and the
ComfyUI loader do real work offline. It is **not** Apple's model and far below its quality; for that, convert the
official weights (`atoken convert`).

| folder | what | size |
|---|---|---|
| `atoken-small/` | continuous tokenizer, 48 latent channels per 4 x 16 x 16 patch (stage 3) | {size_c} |
| `atoken-small-d/` | the same after an FSQ fine-tune: 8 tokens of 4096 codes per patch (stage 4) | {size_d} |
| `atoken-small-gs/` | Gaussian-splat decoder (voxel features -> 8 Gaussians per voxel) | {size_gs} |

Weights are bf16 safetensors; load them in float32 or bf16 (`AutoencoderAToken.from_pretrained(dir)`).

## Architecture
AToken's: patches of 4 frames x 16 x 16 px (an image is the first frame of a 4-frame group), a LayerNorm transformer
encoder with a learned 16 x 16 position table and 4D RoPE, a 48-channel Gaussian posterior, an RMSNorm/QK-norm
transformer decoder back to patches; voxels of 64^3 3D assets as tokens with z in RoPE. Preset `small`: 6 + 6 blocks,
width 192, 3 heads, MLP 768 ({params:.2f} M parameters). Gaussian decoder: AToken's (TRELLIS-style shifted-window
sparse transformer) with 2 blocks of width 96.

## Training data (all installed by Python packages; nothing downloaded)
- Images: scikit-image's `skimage.data` photographs and gradio's `media_assets/images` (24 files), random resized
  crops of 64-160 px.
- Video: gradio's `media_assets/videos` `world.mp4` and `b.mp4` (random 8-frame clips at strides 1/2/4, 64-96 px).
- 3D: gradio's `Bunny.obj`, `face.obj`, `Fox.gltf`, `sofia.stl` and pyvista's `airplane`, `ant`, `nut`, packed into
  64^3 voxel features from 24 ray-cast views (`atoken pack-3d`); random crops of 1536 voxels.
- **Held out, never trained on**: images skimage `chelsea`, `coffee`, `rocket` and gradio `lion.jpg`, `tower.jpg`;
  video gradio `a.mp4`; mesh gradio `Duck.glb`.

## Recipe (`atoken_diffusers/training/configs/embedded_stage*.yaml`)
{stages}

Loss: 0.2 x L1 + 1e-8 x KL (stage 4: no KL). The paper's LPIPS, Gram, CLIP-feature and semantic terms are **off**:
they need pretrained VGG/SigLIP2 networks that cannot be downloaded here. Consequently the pooled semantic embedding is
untrained: do not use this model for zero-shot classification or retrieval. Encoder learning rate x1 (from scratch,
not from SigLIP2). AdamW (0.9, 0.95, wd 0.1), warm-up + cosine, EMA. The Gaussian decoder was fitted for {gs_steps}
steps on the packed training meshes (L1 between its splats, rendered by the project's differentiable rasteriser, and
ray-cast renders of the meshes at 96 px, 3 of 24 views per step; inputs are the packed voxel features themselves).
Stage 1 of the shipped weights ran before a fix to the crop aspect of non-square sizes ([96, 160] and [160, 96]):
those crops were stretched anisotropically, an unintended augmentation.

Compute: two CPU cores (no GPU, shared with other work), about {minutes} minutes of wall time for the four stages
(plus a few minutes for the Gaussian decoder).

Reproduce (from the repository root; each stage resumes from its checkpoints):

```bash
python -m atoken_diffusers.weights.build          # packs meshes, trains stages 1-4, fits the GS decoder, exports, evaluates
python -m atoken_diffusers.weights.evaluate       # only the held-out measurement below
```

## Held-out quality (`python -m atoken_diffusers.weights.evaluate`, float32 CPU)
| held-out media | PSNR | SSIM |
|---|---|---|
{image_rows}
| **mean of the 5 images, 256 x 256** | **{img_psnr:.2f} dB** | **{img_ssim:.4f}** |
| the same through FSQ tokens (`atoken-small-d`) | {d_psnr:.2f} dB | {d_ssim:.4f} |
| video gradio `a.mp4`, first 16 frames, 256 x 256 | {v_psnr:.2f} dB | {v_ssim:.4f} |
| mesh gradio `Duck.glb` -> Gaussians, 3D PSNR at 8 held-out views, 256 px | {m_psnr:.2f} dB | {m_ssim:.4f} |

Images are resized (shorter side 256, antialiased) and centre-cropped to 256 x 256; PSNR over [-1, 1] pixels.
Reconstructions are blurry and show the 16 px patch grid (no perceptual or Gram loss, minutes of CPU training); the
held-out clip is slow-moving, hence its higher PSNR; the splat of the held-out duck has the right shape, but its
colours come out darker and more orange than the original's yellow, with a mottled surface.
For reference, Apple's So/C reaches 0.21 rFID on ImageNet (paper abstract); this model is a CPU-sized stand-in.

## Licence
Apache-2.0, like the code. The training media are the sample files that scikit-image (BSD-3-Clause), gradio
(Apache-2.0) and pyvista (MIT) distribute; see those projects for the provenance of each sample.
"""


def _size(folder: Path) -> str:
    return f"{sum(p.stat().st_size for p in folder.glob('*.safetensors')) / 1e6:.1f} MB"


def _stages(run_dir: Path) -> tuple[str, float]:
    rows, seconds = [], 0.0
    for k, what in enumerate(("images", "+ video", "+ 3D voxels", "FSQ fine-tune, all tasks"), start=1):
        cfg = json.loads((run_dir / f"stage{k}" / "config.json").read_text())
        tasks = ", ".join(f"{name} x{task['batch_size']}" for name, task in cfg["tasks"].items())
        rows.append(f"{k}. {what}: {cfg['run']['max_steps']} steps ({tasks} per step, round robin), "
                    f"lr {cfg['optim']['lr']:g} -> {cfg['optim']['min_lr']:g}")
        seconds += float((run_dir / f"stage{k}" / "seconds.txt").read_text()) if (run_dir / f"stage{k}" / "seconds.txt").is_file() else 0.0
    return "\n".join(rows), seconds


def write_card(run_dir: str | Path = "runs/embedded", gs_steps: int = 300, minutes: float | None = None) -> Path:
    from ..models.autoencoder_atoken import AutoencoderAToken
    from . import DEFAULT_DISCRETE_DIR, DEFAULT_GS_DECODER_DIR, DEFAULT_MODEL_DIR

    m = json.loads((WEIGHTS_DIR / "metrics.json").read_text())
    stages, seconds = _stages(Path(run_dir))
    rows = "\n".join(f"| image `{name}` | {s['psnr']:.2f} dB | {s['ssim']:.4f} |" for name, s in m["images_256"]["per_image"].items())
    params = sum(p.numel() for p in AutoencoderAToken.from_pretrained(DEFAULT_MODEL_DIR).parameters()) / 1e6
    text = CARD.format(
        size_c=_size(DEFAULT_MODEL_DIR), size_d=_size(DEFAULT_DISCRETE_DIR), size_gs=_size(DEFAULT_GS_DECODER_DIR),
        params=params, stages=stages, gs_steps=gs_steps, minutes=round(minutes if minutes is not None else seconds / 60),
        image_rows=rows, img_psnr=m["images_256"]["psnr"], img_ssim=m["images_256"]["ssim"],
        d_psnr=m["images_256_discrete"]["psnr"], d_ssim=m["images_256_discrete"]["ssim"],
        v_psnr=m["video"]["psnr"], v_ssim=m["video"]["ssim"], m_psnr=m["mesh"]["psnr_3d"], m_ssim=m["mesh"]["ssim_3d"])
    path = WEIGHTS_DIR / "MODEL_CARD.md"
    path.write_text(text)
    return path


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--run-dir", default="runs/embedded")
    p.add_argument("--minutes", type=float, help="total training wall time to state (default: from the run logs)")
    args = p.parse_args()
    print(write_card(args.run_dir, minutes=args.minutes))
