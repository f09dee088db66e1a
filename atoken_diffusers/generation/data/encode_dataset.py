"""Pre-encode a labelled media folder into latent shards (``atoken encode-dataset``), on every accelerate process.

The files (sorted, labels from class sub-folders) are cut into shards of ``shard_size`` files; process r of W encodes
shards r, r + W, ... Every shard is written to a temporary file and renamed when complete, so a killed run leaves
only whole shards (plus temporary files that the next run deletes); a restarted run skips the shards that exist and
belong to the same plan. ``plan.json`` pins the dataset, sizes and autoencoder: a folder holding shards of another
plan is refused (use a new ``--out`` or ``--overwrite``). ``manifest.json`` is written last.

Shard contents are described in :mod:`.shards`. Results do not depend on the number of processes: batches are cut
inside each shard, the same way for any process count.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ...utils.atomic import atomic_path, remove_stale_temps, write_atomically
from ...utils.media_sets import captions_for
from ...utils.progress import progress_bar
from .image_folder import check_resolution, load_batch, scan_labelled
from .shards import FORMAT, MANIFEST

PLAN = "plan.json"
# Fault injection for tests: after writing this many shards, a process writes the next one's temporary file and
# then stops (sleeps) before renaming it, so a test can kill the run at a known point.
PAUSE_ENV = "ATOKEN_ENCODE_PAUSE_AFTER"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 23), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_fingerprint(model_dir: Path) -> dict:
    """What identifies the autoencoder: its config and the content hashes of its weight files (a retrained model of
    the same shape is a different plan, so its shards are not mistaken for finished)."""
    weights = sorted((p.name, _sha256(p)) for p in model_dir.glob("*.safetensors"))
    config = json.loads((model_dir / "config.json").read_text())
    for key in ("latents_mean", "latents_std"):  # statistics do not change the latents
        config.pop(key, None)
    return {"config": config, "weights": weights}


def make_plan(data: Path, model_dir: Path, resolution: int, shard_size: int, videos: bool, frames: int,
              text_model: str | None, dtype: torch.dtype = torch.float32) -> dict:
    """Everything that determines the shards: files and labels, sizes, the autoencoder and its dtype. Its hash
    ``id`` marks every shard."""
    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1; got {shard_size}.")
    if videos and (frames < 1 or frames % 4):
        raise ValueError(f"--frames {frames} must be a positive multiple of 4 (AToken's temporal patch); use "
                         f"{max(4, frames // 4 * 4)}.")
    kinds = ("images", "videos") if videos else ("images",)
    found = scan_labelled(data, kinds)
    plan = {"resolution": check_resolution(resolution), "shard_size": shard_size, "frames": frames if videos else None,
            "model": model_fingerprint(model_dir), "dtype": str(dtype), "text_model": str(text_model) if text_model else None,
            "classes": found["images"].classes, "kinds": {}}
    for kind in kinds:
        entry = found[kind]
        files = [str(f.relative_to(data)) for f in entry.files]
        plan["kinds"][kind] = {"files": files, "labels": entry.labels}
    plan["id"] = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]
    return plan


def shard_jobs(plan: dict) -> list[tuple[str, int]]:
    """(kind, shard number) of every shard, in a fixed order."""
    jobs = []
    for kind, entry in plan["kinds"].items():
        n = -(-len(entry["files"]) // plan["shard_size"])
        jobs += [(kind, i) for i in range(n)]
    return jobs


def shard_name(kind: str, i: int) -> str:
    return f"{kind}-{i:05d}.safetensors"


def shard_is_done(path: Path, plan_id: str) -> bool:
    if not path.is_file():
        return False
    try:
        with safe_open(path, framework="pt") as f:
            return (f.metadata() or {}).get("plan") == plan_id
    except Exception:  # unreadable: encode it again
        return False


def _prepare_out(out: Path, plan: dict, overwrite: bool, is_main: bool) -> None:
    """Refuse a folder of another plan (on every process, so all fail alike); on the main process write the plan and
    remove temporary files of a killed run."""
    old = json.loads((out / PLAN).read_text()) if (out / PLAN).is_file() else None
    if old is not None and old.get("id") != plan["id"] and not overwrite:
        raise FileExistsError(f"--out {out} holds shards of a different dataset, model or setting (plan "
                              f"{old.get('id')} != {plan['id']}); pass a new --out folder, or --overwrite to replace "
                              "them.")
    if not is_main:
        return
    if old is not None and old.get("id") != plan["id"]:
        for p in list(out.glob("images-*.safetensors")) + list(out.glob("videos-*.safetensors")) + [out / MANIFEST]:
            p.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    if old is None or old.get("id") != plan["id"]:
        _write_json(out / PLAN, plan)


def _write_json(path: Path, data: dict) -> None:
    write_atomically(path, json.dumps(data, indent=1) + "\n")


class ShardEncoder:
    """Encodes the shards of one plan with one autoencoder (and optional text tower)."""

    def __init__(self, plan: dict, data: Path, out: Path, vae, batch_size: int, text_tower=None):
        self.plan, self.data, self.out, self.vae = plan, data, out, vae
        self.batch_size, self.text_tower = batch_size, text_tower

    @torch.no_grad()
    def encode(self, kind: str, i: int, pause: bool = False, bar=None) -> Path:
        """Write shard ``i`` of ``kind``; ``bar`` (a progress bar) advances by the files of each batch."""
        entry, size = self.plan["kinds"][kind], self.plan["shard_size"]
        files = [self.data / f for f in entry["files"][i * size:(i + 1) * size]]
        labels = entry["labels"][i * size:(i + 1) * size]
        frames = self.plan["frames"] if kind == "videos" else None
        parts: dict[str, list] = {"latents": [], "indices": [], "text_embeds": []}
        vae = self.vae
        for start in range(0, len(files), self.batch_size):
            chunk = files[start:start + self.batch_size]
            x = load_batch(chunk, self.plan["resolution"], frames).to(vae.device, vae.dtype)
            mean = vae.encode(x).latent_dist.mode()
            if not torch.isfinite(mean).all():
                raise FloatingPointError(f"NaN/Inf latents for {[str(f) for f in chunk]}; with --dtype fp16 try bf16 "
                                         "or fp32.")
            parts["latents"].append(mean.float().cpu())
            if bar is not None:
                bar.update(len(chunk))
            if vae.quantizer is not None:
                parts["indices"].append(vae.quantizer.quantize(mean.movedim(1, -1))[1].movedim(-1, 1).cpu())
            if self.text_tower is not None:
                parts["text_embeds"].append(self.text_tower.encode(captions_for(chunk)).float().cpu())
        tensors = {k: torch.cat(v) for k, v in parts.items() if v}
        if "indices" in tensors:
            small = torch.int16 if vae.quantizer.codebook_size <= 2**15 else torch.int32
            tensors["indices"] = tensors["indices"].to(small)
        tensors["labels"] = torch.tensor(labels, dtype=torch.long)
        final = self.out / shard_name(kind, i)
        meta = {"plan": self.plan["id"], "kind": kind, "shard": str(i), "count": str(len(files))}
        with atomic_path(final) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
            while pause:  # test hook: wait here, with a half-finished shard on disk, to be killed
                time.sleep(0.05)
        return final


def write_manifest(out: Path, plan: dict, model_dir: Path, vae, text_dim: int | None) -> dict:
    fsq = vae.quantizer
    manifest = {"format": FORMAT, "version": 1, "plan": plan["id"], "resolution": plan["resolution"],
                "frames": plan["frames"], "classes": plan["classes"], "text_dim": text_dim,
                "model": {"path": str(model_dir.resolve()), "latent_channels": vae.config.latent_channels,
                          "num_codebooks": fsq.num_codebooks if fsq is not None else None,
                          "codebook_size": fsq.codebook_size if fsq is not None else None},
                "kinds": {}}
    for kind, entry in plan["kinds"].items():
        shards, shape = [], None
        for k, i in shard_jobs(plan):
            if k != kind:
                continue
            name = shard_name(kind, i)
            with safe_open(out / name, framework="pt") as f:
                lat = f.get_slice("latents")
                shape = shape or lat.get_shape()[1:]
                shards.append({"file": name, "count": lat.get_shape()[0]})
        counts = [entry["labels"].count(c) for c in range(len(plan["classes"]))]
        manifest["kinds"][kind] = {"count": len(entry["files"]), "latent_shape": shape, "class_counts": counts,
                                   "shards": shards}
    _write_json(out / MANIFEST, manifest)
    return manifest


def encode_dataset(data, model, out, resolution: int = 256, shard_size: int = 256, batch_size: int = 16,
                   videos: bool = False, frames: int = 16, text_model: str | None = None, overwrite: bool = False,
                   dtype: torch.dtype = torch.float32, accelerator=None, print_summary: bool = False,
                   progress: bool | None = False) -> dict:
    """Encode ``data`` (a folder with one sub-folder per class) into shards under ``out``.

    Run it in one process or under ``accelerate launch`` (each process takes every W-th shard). Returns a summary:
    ``{"shards": total, "encoded": written by this run (all processes), "skipped": already complete, "out": path}``.
    ``progress``: a bar over this process's files on the main process (None: when stderr is a terminal; False, the
    default: none).
    """
    from accelerate import Accelerator

    from ...models.autoencoder_atoken import AutoencoderAToken

    acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    data, model_dir, out = Path(data), Path(model), Path(out)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"--model {model_dir}: no config.json; pass a converted AToken folder "
                                "(`atoken convert`).")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1; got {batch_size}.")
    plan = make_plan(data, model_dir, resolution, shard_size, videos, frames, text_model, dtype)
    _prepare_out(out, plan, overwrite, acc.is_main_process)
    acc.wait_for_everyone()

    vae = AutoencoderAToken.from_pretrained(model_dir, torch_dtype=dtype, local_files_only=True).to(acc.device).eval()
    tower = None
    if text_model:
        from ...understanding.text import TextTower

        tower = TextTower.from_pretrained(text_model, device=acc.device)
    encoder = ShardEncoder(plan, data, out, vae, batch_size, tower)
    jobs = shard_jobs(plan)
    mine = jobs[acc.process_index::acc.num_processes]
    pause_after = int(os.environ.get(PAUSE_ENV, "-1"))
    encoded = skipped = 0
    size = plan["shard_size"]
    files_of = {(k, i): len(plan["kinds"][k]["files"][i * size:(i + 1) * size]) for k, i in mine}
    with progress_bar(total=sum(files_of.values()), desc=f"encode-dataset ({len(mine)} shards)", unit="file",
                      enabled=progress if acc.is_main_process else False) as bar:
        for kind, i in mine:
            if shard_is_done(out / shard_name(kind, i), plan["id"]):
                skipped += 1
                bar.update(files_of[kind, i])
                continue
            bar.set_postfix_str(shard_name(kind, i), refresh=False)
            encoder.encode(kind, i, pause=encoded == pause_after, bar=bar)
            encoded += 1
    counts = torch.tensor([encoded, skipped], device=acc.device)
    counts = acc.reduce(counts, "sum") if acc.num_processes > 1 else counts
    acc.wait_for_everyone()
    text_dim = None
    if acc.is_main_process:
        if tower is not None:
            with safe_open(out / shard_name(*jobs[0]), framework="pt") as f:
                text_dim = f.get_slice("text_embeds").get_shape()[-1]
        write_manifest(out, plan, model_dir, vae, text_dim)
    acc.wait_for_everyone()
    summary = {"shards": len(jobs), "encoded": int(counts[0]), "skipped": int(counts[1]), "out": str(out)}
    if print_summary and acc.is_main_process:
        sizes = ", ".join(f"{len(e['files'])} {k}" for k, e in plan["kinds"].items())
        print(f"{out}: {sizes} in {len(jobs)} shards ({summary['encoded']} encoded now, {summary['skipped']} already "
              f"complete), {len(plan['classes'])} classes, {acc.num_processes} process(es); manifest.json written")
    return summary

