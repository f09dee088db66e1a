"""Training configuration: one YAML file per curriculum stage, read into typed dataclasses.

Unknown keys are errors (a typo must not silently fall back to a default). See ``configs/`` for the paper's stages
and the tiny CPU stages used by the tests.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..losses.recipe import LossWeights


@dataclass
class ModelConfig:
    preset: str = "tiny"                 # a name from atoken_diffusers.models.presets
    overrides: dict = field(default_factory=dict)
    init_from: str | None = None         # a diffusers folder (e.g. the previous stage's export); overlapping slices of
                                         # resized tensors (32 -> 48 latent channels) are copied, new ones start at 0
    siglip2_init: str | None = None      # a Siglip2VisionModel folder to initialise the encoder from
    pca_init: str | None = None          # a .safetensors PCA codec (mean, basis, scale; weights/baseline.py) the
                                         # model starts as (training/pca_init.py); applied before init_from
    context_init: str | None = None      # with pca_init: a .safetensors least-squares context decoder
                                         # (training/context_init.py) written into the decoder


@dataclass
class SourceConfig:
    kind: str = "images"                 # images | videos | voxels
    paths: list = field(default_factory=list)   # files, folders, globs, or bundled sets: skimage, gradio:images, ...
    sizes: list = field(default_factory=lambda: [256])  # image sides (or [h, w] pairs) drawn per sample
    frames: int = 16                     # video clip length
    strides: list = field(default_factory=lambda: [1, 2])  # frame strides drawn per clip
    captions: str | None = None          # a JSON {file name: caption}; otherwise sidecar .txt files, else the name
    exclude: list = field(default_factory=list)  # file-name patterns left out (held-out evaluation media)
    max_tokens: int | None = None        # voxels: train on a random cube-shaped crop of at most this many voxels


@dataclass
class TaskConfig:
    source: SourceConfig = field(default_factory=SourceConfig)
    batch_size: int = 8
    ratio: int = 1                       # steps of this task per round-robin cycle


@dataclass
class LossConfig(LossWeights):
    lpips_vgg: str | None = None         # torchvision VGG16 file, "random" (tests) or None (term off)
    lpips_heads: str | None = None       # LPIPS vgg.pth heads
    gram_vgg: str | None = None          # torchvision VGG19 file, "random" or None
    gram_layers: list = field(default_factory=lambda: ["relu1_2", "relu2_2", "relu3_4", "relu4_4", "relu5_4"])
    feature_model: str | None = None     # CLIP/SigLIP vision folder for the CLIP-feature loss
    teacher: str | None = None           # SigLIP2 (vision) folder for image distillation
    text_model: str | None = None        # SigLIP2 text folder (semantic losses need captions embedded)


@dataclass
class OptimConfig:
    lr: float = 3e-4
    min_lr: float = 3e-5
    warmup_steps: int = 2000
    betas: list = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.1
    encoder_lr_mult: float = 0.1
    eight_bit: bool = False              # bitsandbytes AdamW8bit
    grad_clip: float = 1.0
    freeze: list = field(default_factory=list)  # parameter-name prefixes kept fixed (e.g. [encoder., to_moments.])


@dataclass
class LoraConfig:
    rank: int = 16
    alpha: int = 16
    target_modules: list = field(default_factory=lambda: ["to_qkv", "to_out", "fc1", "fc2"])


@dataclass
class RunConfig:
    max_steps: int = 100_000
    grad_accum: int = 1
    mixed_precision: str = "no"          # no | bf16 | fp16
    gradient_checkpointing: bool = False
    ema_decay: float = 0.9999
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    output_dir: str = "runs/atoken"
    sample_posterior: bool = True


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: dict[str, TaskConfig] = field(default_factory=dict)  # "image", "video", "3d" -> TaskConfig
    losses: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    lora: LoraConfig | None = None

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict | None = None) -> "TrainConfig":
        """Read ``path`` (a file, or the name of a bundled config such as ``tiny_stage1``). ``overrides`` maps dotted
        keys to values, e.g. ``{"run.max_steps": 10, "model.init_from": "runs/s1/final"}``."""
        data = apply_overrides(yaml.safe_load(resolve_config_path(path).read_text()) or {}, overrides)
        config = build_dataclass(cls, data, "config")
        config.validate()
        return config

    def validate(self) -> None:
        """Reject settings that would fail later or silently misbehave; messages name the key and its value."""
        run, optim = self.run, self.optim
        for key in ("max_steps", "grad_accum", "checkpoint_every", "log_every"):
            if getattr(run, key) < 1:
                raise ValueError(f"run.{key} must be >= 1; got {getattr(run, key)}.")
        if optim.warmup_steps < 0 or not 0 < optim.min_lr <= optim.lr:
            raise ValueError(f"optim needs warmup_steps >= 0 and 0 < min_lr <= lr; got warmup_steps="
                             f"{optim.warmup_steps}, min_lr={optim.min_lr}, lr={optim.lr}.")
        if not self.tasks:
            raise ValueError("config 'tasks' is empty; add at least one of image, video, 3d.")
        for name, task in self.tasks.items():
            if name not in ("image", "video", "3d"):
                raise ValueError(f"tasks: unknown task {name!r}; use image, video or 3d.")
            for key in ("batch_size", "ratio"):
                if getattr(task, key) < 1:
                    raise ValueError(f"tasks.{name}.{key} must be >= 1; got {getattr(task, key)}.")
            expected = {"image": "images", "video": "videos", "3d": "voxels"}[name]
            if task.source.kind != expected:
                raise ValueError(f"tasks.{name}.source.kind must be {expected!r}; got {task.source.kind!r}.")
        if self.run.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"run.mixed_precision must be no, bf16 or fp16; got {self.run.mixed_precision!r}.")

    def to_dict(self) -> dict:
        """The whole configuration as plain data (written to the run's config.json)."""
        return dataclasses.asdict(self)


CONFIG_DIR = Path(__file__).parent / "configs"


def apply_overrides(data: dict, overrides: dict | None) -> dict:
    """Set dotted keys of a parsed YAML mapping in place ({"run.max_steps": 10}); returns ``data``."""
    for dotted, value in copy.deepcopy(overrides or {}).items():
        node = data
        for key in dotted.split(".")[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {dotted!r}: {key!r} is not a section.")
        node[dotted.split(".")[-1]] = value
    return data


def resolve_config_path(path: str | Path) -> Path:
    """A YAML file, or the bare name of a bundled config (``tiny_stage1``); a missing file is an error, never a
    fallback to a bundled config of the same name."""
    p = Path(path)
    if p.is_file():
        return p
    bundled = CONFIG_DIR / f"{p.name}.yaml"
    if p.parent == Path(".") and p.suffix == "" and bundled.is_file():
        return bundled
    names = sorted(f.stem for f in CONFIG_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"config {str(path)!r} is neither a file nor a bundled config ({', '.join(names)}).")


def build_dataclass(cls, data, where: str):
    """``cls(**data)`` with nested dataclass fields built recursively; unknown keys raise."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(fields)}.")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kind = hints[name]
        args = typing.get_args(kind)
        if type(None) in args:  # X | None: None stays None, a mapping builds X
            if value is None:
                kwargs[name] = None
                continue
            kind = next(a for a in args if a is not type(None))
        if typing.get_origin(kind) is dict and dataclasses.is_dataclass(typing.get_args(kind)[1]):
            item = typing.get_args(kind)[1]  # e.g. tasks: {name: TaskConfig}
            value = {k: build_dataclass(item, v or {}, f"{where}.{name}.{k}") for k, v in (value or {}).items()}
        elif dataclasses.is_dataclass(kind) and isinstance(kind, type):
            base = getattr(cls(), name) or kind()  # the section's defaults as this config declares them
            merged = {**dataclasses.asdict(base), **(value or {})}
            value = build_dataclass(kind, merged, f"{where}.{name}")
        elif kind in (int, float) and not isinstance(value, bool) and isinstance(value, (int, float, str)):
            try:  # YAML reads "2e-4" (no dot) as a string
                value = kind(value) if kind is float or not isinstance(value, float) else value
            except ValueError:
                raise ValueError(f"{where}.{name} must be a number; got {value!r}.") from None
        kwargs[name] = value
    return cls(**kwargs)
