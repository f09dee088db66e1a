"""The benchmark sections. Each returns rows (dicts) for the JSON file; run.py renders them as Markdown."""

from __future__ import annotations

import gc

import torch

from atoken_diffusers import AutoencoderAToken, SparseTokens
from atoken_diffusers.tokens import grid_to_tokens, pad_to_patches, tokens_to_grid

from .peers import PEERS, reconstruct
from .timing import matmul_flops, measure

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def make_model(preset: str, device, dtype) -> AutoencoderAToken:
    torch.manual_seed(0)  # same random weights for every section and for the official copy
    model = AutoencoderAToken.from_preset(preset).eval()
    return torch.nn.Module.to(model, device=device, dtype=dtype)


def pixels(shape, device, dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return (torch.rand(shape, generator=g) * 2 - 1).to(device=device, dtype=dtype)


def _free() -> None:
    """Release what the caller just deleted before the next section measures memory."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@torch.inference_mode()
def official_vs_ours(checkout, device, dtypes, cases, repeats, preset="so-c") -> list[dict]:
    """Encode + decode with identical weights and inputs, alternating the two implementations."""
    from .official import OfficialAToken

    rows = []
    for dname in dtypes:
        ours = make_model(preset, device, DTYPES[dname])
        official = OfficialAToken(checkout, ours)
        for label, shape in cases:
            x = pixels(shape, device, DTYPES[dname])
            a = measure(lambda: ours(x).sample, device, repeats)
            b = measure(lambda: official.reconstruct(x), device, repeats)
            diff = (ours(x).sample.float() - official.reconstruct(x).float()).abs().max().item()
            rows.append(dict(case=label, dtype=dname, ours=a.as_dict(), official=b.as_dict(),
                             speedup=b.median_s / a.median_s, max_abs_diff=diff))
            print(f"  official vs ours {label} {dname}: ours {a.cell()}, official {b.cell()}, "
                  f"x{b.median_s / a.median_s:.2f}, max|diff| {diff:.2e}", flush=True)
        del ours, official
        _free()
    return rows


@torch.inference_mode()
def peers(device, image_shape, video_shape, repeats, presets=("so-c", "base")) -> list[dict]:
    """Seconds per image / clip and peak memory at matched inputs (fp32)."""
    rows = []
    entries = [(f"AToken {p}", "image+video", "16x16x4", 48, p) for p in presets]
    entries += [(name, mod, ratio, ch, ctor) for name, (mod, ratio, ch, ctor) in PEERS.items()]
    for name, modality, ratio, channels, ctor in entries:
        try:
            model = make_model(ctor, device, torch.float32) if isinstance(ctor, str) else ctor().eval().to(device)
        except Exception as err:  # a peer missing from this diffusers version
            print(f"  skip {name}: {err}")
            continue
        params = sum(p.numel() for p in model.parameters()) / 1e6
        for kind, shape in (("image", image_shape), ("video", video_shape)):
            if kind not in modality:
                continue
            x = pixels(shape, device, torch.float32)
            fn = (lambda: model(x).sample) if name.startswith("AToken") else (lambda: reconstruct(model, x))
            m = measure(fn, device, repeats)
            rows.append(dict(model=name, input=f"{kind} {'x'.join(map(str, shape[2:]))}", params_m=params,
                             compression=ratio, latent_channels=channels, **m.as_dict()))
            print(f"  {name} {kind}: {m.cell()}, peak {m.peak_mb:.0f} MB", flush=True)
        del model
        _free()
    return rows


@torch.inference_mode()
def scaling(device, dtype, preset, sides, lengths, video_side, repeats) -> dict:
    model = make_model(preset, device, DTYPES[dtype])
    out = {"preset": preset, "dtype": dtype, "image_side": [], "video_length": [], "packed": None}
    for side in sides:
        x = pixels((1, 3, side, side), device, DTYPES[dtype])
        m = measure(lambda: model(x).sample, device, repeats)
        out["image_side"].append(dict(side=side, tokens=(side // 16) ** 2, **m.as_dict()))
        print(f"  scaling image {side}: {m.cell()}, peak {m.peak_mb:.0f} MB", flush=True)
    for frames in lengths:
        x = pixels((1, 3, frames, video_side, video_side), device, DTYPES[dtype])
        m = measure(lambda: model(x).sample, device, repeats)
        output_mb = x.numel() * x.element_size() / 2**20  # the reconstruction itself must grow with the clip
        out["video_length"].append(dict(frames=frames, output_mb=output_mb, **m.as_dict()))
        print(f"  scaling video {frames} frames: {m.cell()}, peak {m.peak_mb:.0f} MB", flush=True)

    sizes = [(256, 256), (192, 320), (128, 128), (320, 192)]
    images = [pixels((1, 3, h, w), device, DTYPES[dtype]) for h, w in sizes]
    parts = [grid_to_tokens(pad_to_patches(im[:, :, None])) for im in images]
    packed = SparseTokens.cat(parts)

    def run_packed():
        z = model.encode_tokens(packed).latent_dist.mean
        return model.decode_tokens(packed.replace(z))

    def run_single():
        for im in images:
            model(im)

    a, b = measure(run_packed, device, repeats), measure(run_single, device, repeats)
    # A faster packed call only counts if it computes the same images: record how far it is from the single calls.
    pieces = run_packed().feats.split([part.feats.shape[0] for part in parts])
    diff = max(float((tokens_to_grid(piece, (1, 1, h // 16, w // 16), model.patch_size)[:, :, 0] - model(im).sample)
                     .abs().max()) for piece, im, (h, w) in zip(pieces, images, sizes))
    out["packed"] = dict(sizes=sizes, packed=a.as_dict(), singles=b.as_dict(), speedup=b.median_s / a.median_s,
                         max_abs_diff=diff)
    print(f"  packed batch of {len(sizes)}: {a.cell()} vs singles {b.cell()}", flush=True)
    del model
    _free()
    return out


def model_flops(model: AutoencoderAToken, tokens: int, group: int) -> float:
    """FLOPs of one encode + decode of ``tokens`` tokens in attention groups of ``group`` tokens."""
    linear = sum(m.in_features * m.out_features for n, m in model.named_modules()
                 if isinstance(m, torch.nn.Linear) and ".pool." not in f".{n}.")
    c = model.config
    attention = 4 * group * (c.encoder_depth * c.encoder_dim + c.decoder_depth * c.decoder_dim)
    return tokens * (2 * linear + attention)


@torch.inference_mode()
def efficiency(device, dtypes, sides, repeats, preset="so-c", compile_model=False) -> list[dict]:
    """Encode + decode time of one image per dtype and side, as a share of the device's measured matmul rate; with
    ``compile_model`` also under ``torch.compile(fullgraph=True)`` (one graph: no breaks allowed)."""
    rows = []
    for dname in dtypes:
        dtype = DTYPES[dname]
        model = make_model(preset, device, dtype)
        peak = matmul_flops(device, dtype)
        compiled = torch.compile(model, fullgraph=True) if compile_model else None
        for side in sides:
            tokens = (side // 16) ** 2
            x = pixels((1, 3, side, side), device, dtype)
            m = measure(lambda: model(x).sample, device, repeats)
            achieved = model_flops(model, tokens, tokens) / m.median_s
            row = dict(preset=preset, dtype=dname, side=side, seconds=m.median_s, achieved_tflops=achieved / 1e12,
                       matmul_tflops=peak / 1e12, utilisation=achieved / peak)
            if compiled is not None:
                compiled(x)  # compile outside the timing
                mc = measure(lambda: compiled(x).sample, device, repeats)
                row.update(compiled_seconds=mc.median_s, compiled_speedup=m.median_s / mc.median_s,
                           compiled_utilisation=model_flops(model, tokens, tokens) / mc.median_s / peak)
            rows.append(row)
            print(f"  efficiency {dname} {side}px: {achieved / 1e12:.3f} TFLOP/s of {peak / 1e12:.3f} matmul "
                  f"({100 * achieved / peak:.0f}%)", flush=True)
        del model, compiled
        _free()
    return rows
