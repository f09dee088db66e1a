"""The evaluation loop: every row reconstructs every item, per-item results land on disk, the main process gathers.

Items are sharded across ``accelerate launch`` processes (process r of W takes items r, r + W, ...). Each result is a
small safetensors file (scores in its metadata, the feature vectors that rFID / rFVD need as tensors), written
atomically under ``work_dir/<protocol id>/<row key>/<item key>.safetensors``; the protocol id hashes the resolution,
fit, frames, dtype, device type and feature-network weights. A rerun (after a crash, with more items, or with another
model added) reuses every file that exists and computes only the rest. After all processes finish, the main process
reads the files of all items, so the table does not depend on the number of processes.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..utils.atomic import atomic_path, remove_stale_temps, write_atomically
from ..utils.progress import progress_bar
from .autoencoders import Compression, Row, RowSpec, fit_pca, load_row, pca_spec
from .datasets import Item, Prepared, Protocol, prepare
from .feature_networks import FeatureNetworks
from .metrics import features, frechet_distance, lpips_distance, pixel_scores

REFERENCE = "reference"  # features of the original items, shared by every row
ROW_INFO = "row.json"
SET_METRIC = {"images": ("rfid", "inception"), "videos": ("rfvd", "i3d")}
DEFAULT_PCA_FIT = {"images": ("skimage", "gradio:images"), "videos": ("gradio:videos",)}


@dataclass
class Evaluation:
    """Everything one run needs. ``gs_decoder``: a Gaussian-decoder folder for mesh items (AToken rows only);
    ``pca_fit``: per kind, the media a PCA baseline of a size without a shipped file is fitted on."""

    items: list[Item]
    models: list[RowSpec]
    work_dir: Path
    protocol: Protocol = field(default_factory=Protocol)
    networks: FeatureNetworks = field(default_factory=FeatureNetworks)
    dtype: torch.dtype = torch.float32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    gs_decoder: str | None = None
    pca_fit: dict = field(default_factory=lambda: dict(DEFAULT_PCA_FIT))

    def protocol_id(self) -> str:
        text = json.dumps([self.protocol.as_dict(), self.networks.fingerprint(), str(self.dtype), self.device.type,
                           str(self.gs_decoder)], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def kinds(self) -> list[str]:
        return [k for k in ("images", "videos", "meshes") if any(item.kind == k for item in self.items)]


def _write_part(path: Path, scores: dict, tensors: dict | None = None) -> None:
    tensors = {k: v.contiguous() for k, v in (tensors or {}).items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"scores": json.dumps(scores)})


def _read_part(path: Path) -> tuple[dict, dict]:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["scores"]), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)


def _timed(fn, device: torch.device):
    """``fn()`` and its wall time in seconds (after the device finished)."""
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - start


class Runner:
    """Runs an :class:`Evaluation` on this process's share of items (``rank`` of ``world``)."""

    def __init__(self, run: Evaluation, rank: int = 0, world: int = 1, progress: bool | None = False):
        self.run, self.rank, self.world, self.progress = run, rank, world, progress
        self.root = Path(run.work_dir) / run.protocol_id()
        self.keys = [item.key(i) for i, item in enumerate(run.items)]
        self.mine = [i for i in range(len(run.items)) if i % world == rank]
        self.networks = run.networks.to(run.device)
        self.computed = 0

    def _prepared(self, i: int) -> Prepared:
        return prepare(self.run.items[i], self.run.protocol)

    def _set_network(self, kind: str):
        name = SET_METRIC.get(kind, (None, None))[1]
        return getattr(self.networks, name) if name else None

    def references(self) -> None:
        """Features of the original items for rFID / rFVD (once, whatever the rows)."""
        for i in self.mine:
            item, path = self.run.items[i], self.root / REFERENCE / f"{self.keys[i]}.safetensors"
            network = self._set_network(item.kind)
            if network is None or path.is_file():
                continue
            prepared = self._prepared(i)
            _write_part(path, {"kind": item.kind}, {"features": features(network, prepared.crop(prepared.x))})

    def _score(self, row: Row, i: int) -> tuple[dict, dict]:
        item, device = self.run.items[i], self.run.device
        if item.kind == "meshes":
            return self._score_mesh(row, item)
        prepared = self._prepared(i)
        rec, seconds = _timed(lambda: row.reconstruct(prepared.x), device)
        if not torch.isfinite(rec).all():
            raise FloatingPointError(f"{row.spec.name} reconstructed {item.path} with NaN/Inf; try --dtype fp32.")
        rec, x = prepared.crop(rec), prepared.crop(prepared.x)
        scores = {**pixel_scores(rec, x), "seconds": seconds}
        if self.networks.lpips is not None:
            scores["lpips"] = lpips_distance(self.networks.lpips, rec, x)
        network = self._set_network(item.kind)
        return scores, ({"features": features(network, rec)} if network is not None else {})

    def _score_mesh(self, row: Row, item: Item) -> tuple[dict, dict]:
        from ..three_d.pipeline import reconstruct_mesh

        result, seconds = _timed(lambda: reconstruct_mesh(item.path, row.model, self.gs), self.run.device)
        scores = {"psnr": result.psnr, "ssim": result.ssim, "seconds": seconds,
                  "gaussians": int(result.gaussians.xyz.shape[0])}
        if self.networks.lpips is not None:
            scores["lpips"] = lpips_distance(self.networks.lpips, result.renders * 2 - 1, result.targets * 2 - 1)
        return scores, {}

    def _load_gs_decoder(self):
        from ..three_d.gaussian_decoder import ATokenGaussianDecoder

        if not self.run.gs_decoder:
            raise ValueError("mesh items need a Gaussian decoder: pass --gs-decoder DIR (or no meshes).")
        return ATokenGaussianDecoder.from_pretrained(self.run.gs_decoder, torch_dtype=self.run.dtype,
                                                     local_files_only=True).to(self.run.device).eval()

    def score_row(self, spec: RowSpec, kinds: list[str], bar) -> None:
        """Write this process's missing results of row ``spec`` (loading its model only if some are missing)."""
        folder = self.root / spec.key()
        todo = [i for i in self.mine if self.run.items[i].kind in kinds
                and not (folder / f"{self.keys[i]}.safetensors").is_file()]
        bar.update(sum(self.run.items[i].kind in kinds for i in self.mine) - len(todo))
        if not todo and (folder / ROW_INFO).is_file():
            return
        if spec.family == "pca" and spec.path is None:  # fit once; reruns and other processes read the stored fit
            fitted = folder / "pca.safetensors"
            if not fitted.is_file():
                fit_pca(spec.components, spec.kind, spec.fit_set).save(fitted)
            spec = replace(spec, path=str(fitted))
        row = load_row(spec, spec.kind or kinds[0], self.run.dtype, self.run.device)
        info = {"spec": asdict(spec), "compression": asdict(row.compression), "kinds": list(row.kinds)}
        write_atomically(folder / ROW_INFO, json.dumps(info, indent=1) + "\n")
        todo = [i for i in todo if self.run.items[i].kind in row.kinds]
        if any(self.run.items[i].kind == "meshes" for i in todo):
            self.gs = self._load_gs_decoder()
        for i in todo:
            bar.set_postfix_str(f"{spec.name}: {self.run.items[i].name}", refresh=False)
            scores, tensors = self._score(row, i)
            _write_part(folder / f"{self.keys[i]}.safetensors", {"kind": self.run.items[i].kind, **scores}, tensors)
            self.computed += 1
            bar.update(1)

    def score_all(self, barrier=lambda: None) -> list[tuple[RowSpec, list[str]]]:
        """Every row on this process's items: the models, then a PCA baseline of each model's size per kind.
        ``barrier`` waits for the other processes (the PCA sizes come from the models' ``row.json`` files)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for sub in [self.root, *filter(Path.is_dir, self.root.iterdir())]:
            remove_stale_temps(sub)  # only a dead writer's leftovers: other processes may be writing
        kinds = self.run.kinds()
        rows = [(spec, [k for k in kinds if k != "meshes" or spec.family == "atoken"]) for spec in self.run.models]
        count = sum(len([i for i in self.mine if self.run.items[i].kind in ks]) for _, ks in rows)
        self.references()
        with progress_bar(total=count, desc="evaluate", unit="item", enabled=self.progress) as bar:
            for spec, row_kinds in rows:
                self.score_row(spec, row_kinds, bar)
            barrier()
            for spec in self.pca_specs(rows):
                self.score_row(spec, [spec.kind], bar)
        return rows + [(spec, [spec.kind]) for spec in self.pca_specs(rows)]

    def pca_specs(self, rows: list[tuple[RowSpec, list[str]]]) -> list[RowSpec]:
        """One PCA row per kind and distinct latent size of the model rows (their ``row.json``)."""
        specs = []
        for kind in ("images", "videos"):
            if kind not in self.run.kinds():
                continue
            sizes = []
            for spec, _ in rows:
                info = json.loads((self.root / spec.key() / ROW_INFO).read_text())
                size = Compression(**info["compression"]).floats_per_patch(kind)
                if size not in sizes:
                    sizes.append(size)
            specs += [pca_spec(size, kind, self.run.pca_fit[kind]) for size in sizes]
        return specs

    def gather(self, rows: list[tuple[RowSpec, list[str]]]) -> dict:
        """The report: per row and kind, the mean of each per-item score, the set metric, the per-item scores."""
        run = self.run
        report = {"protocol": {**run.protocol.as_dict(), "dtype": str(run.dtype).removeprefix("torch."),
                               "device": run.device.type},
                  "items": {k: sum(item.kind == k for item in run.items) for k in run.kinds()},
                  "feature_networks": dict(run.networks.sources), "not_computed": run.networks.missing(run.kinds()),
                  "rows": []}
        for spec, kinds in rows:
            folder = self.root / spec.key()
            info = json.loads((folder / ROW_INFO).read_text())
            for kind in kinds:
                if kind not in info["kinds"]:
                    continue
                indices = [i for i, item in enumerate(run.items) if item.kind == kind]
                parts = [_read_part(folder / f"{self.keys[i]}.safetensors") for i in indices]
                report["rows"].append(self._summary(spec, kind, info, indices, parts))
        return report

    def _summary(self, spec: RowSpec, kind: str, info: dict, indices: list[int], parts: list) -> dict:
        compression = Compression(**info["compression"])
        per_item = {self.run.items[i].name: scores for i, (scores, _) in zip(indices, parts)}
        metrics = ("psnr", "ssim", "lpips", "seconds")
        means = {m: sum(s[m] for s in per_item.values()) / len(per_item) for m in metrics
                 if all(m in s for s in per_item.values())}
        summary = {"name": spec.name, "family": spec.family, "kind": kind, "items": len(indices),
                   "compression": asdict(compression), "floats_per_patch": compression.floats_per_patch(kind)
                   if kind != "meshes" else None, **means}
        if kind in SET_METRIC and self._set_network(kind) is not None:
            name = SET_METRIC[kind][0]
            real = torch.cat([_read_part(self.root / REFERENCE / f"{self.keys[i]}.safetensors")[1]["features"]
                              for i in indices])
            fake = torch.cat([tensors["features"] for _, tensors in parts])
            summary[name] = frechet_distance(real, fake) if len(indices) >= 2 else None
        summary["per_item"] = per_item
        return summary


def evaluate(run: Evaluation, progress: bool | None = False) -> dict | None:
    """Run ``run`` on this process (all items alone, or its share under ``accelerate launch``) and return the report
    on the main process (None on the others). ``report["computed"]`` counts the results computed now (the rest were
    reused from ``work_dir``)."""
    from accelerate import PartialState

    state = PartialState(cpu=run.device.type == "cpu")
    runner = Runner(run, state.process_index, state.num_processes, progress if state.is_main_process else False)
    rows = runner.score_all(barrier=state.wait_for_everyone)
    computed = torch.tensor([runner.computed])
    if state.num_processes > 1:
        from accelerate.utils import reduce

        computed = reduce(computed.to(state.device), "sum").cpu()
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    report = runner.gather(rows)
    report["computed"] = int(computed.item())
    return report
