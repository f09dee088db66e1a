"""Configuration of generator training (DiT and AR): typed dataclasses, read from YAML and/or dotted overrides.

    model:  {preset: B, overrides: {num_layers: 8}}        # DIT_PRESETS / AR_PRESETS + any model argument
    data:   {shards: runs/shards, kind: images}            # an `atoken encode-dataset` folder
    optim:  {lr: 1.0e-4, warmup_steps: 1000, min_lr: 1.0e-4}   # AToken's OptimConfig (AdamW + warm-up + cosine)
    run:    {max_steps: 400000, batch_size: 32, output_dir: runs/dit, checkpoint_every: 5000}
    flow:   {shift: 1.0, timestep_sampling: logit_normal}  # DiT only

Unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ...training.config import OptimConfig, apply_overrides, build_dataclass


@dataclass
class ModelSpec:
    preset: str = "B"                    # a name of DIT_PRESETS / AR_PRESETS
    overrides: dict = field(default_factory=dict)   # any model constructor argument (num_layers, mlp_ratio, ...)


@dataclass
class DataConfig:
    shards: str = ""                     # folder written by `atoken encode-dataset`
    kind: str = "images"
    in_memory: bool = True               # load all shards at start (else read them on demand)
    vae: str | None = None               # AToken folder for the exported pipeline; default: the shards' model


@dataclass
class GeneratorRunConfig:
    max_steps: int = 400_000
    batch_size: int = 32                 # per process
    mixed_precision: str = "no"          # no | bf16 | fp16
    gradient_checkpointing: bool = False
    ema_decay: float = 0.9999            # 0 turns EMA off (the export then holds the trained weights)
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 5000
    keep_checkpoints: int = 2
    output_dir: str = "runs/generator"
    class_dropout: float = 0.1           # probability of training on the "no class" label (needed for guidance)


@dataclass
class FlowConfig:
    shift: float = 1.0                   # sigma -> shift * sigma / (1 + (shift - 1) sigma), also the scheduler's shift
    timestep_sampling: str = "logit_normal"   # logit_normal | uniform


@dataclass
class GeneratorTrainConfig:
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, min_lr=1e-5, warmup_steps=1000,
                                                                   weight_decay=0.0))
    run: GeneratorRunConfig = field(default_factory=GeneratorRunConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)

    @classmethod
    def from_yaml(cls, path: str | Path | None = None, overrides: dict | None = None) -> "GeneratorTrainConfig":
        """Read ``path`` (None: all defaults), then apply ``overrides`` {dotted key: value}, e.g.
        ``{"data.shards": "runs/shards", "run.max_steps": 100}``."""
        data = {}
        if path is not None:
            if not Path(path).is_file():
                raise FileNotFoundError(f"config {path} does not exist.")
            data = yaml.safe_load(Path(path).read_text()) or {}
        config = build_dataclass(cls, apply_overrides(data, overrides), "config")
        config.validate()
        return config

    def validate(self) -> None:
        if not self.data.shards:
            raise ValueError("data.shards is not set; pass the folder of `atoken encode-dataset` (--shards DIR).")
        if self.run.batch_size < 1 or self.run.max_steps < 1:
            raise ValueError("run.batch_size and run.max_steps must be >= 1.")
        if not 0 <= self.run.class_dropout < 1:
            raise ValueError(f"run.class_dropout must lie in [0, 1); got {self.run.class_dropout}.")
        if self.run.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"run.mixed_precision must be no, bf16 or fp16; got {self.run.mixed_precision!r}.")
        if self.flow.timestep_sampling not in ("logit_normal", "uniform"):
            raise ValueError(f"flow.timestep_sampling must be logit_normal or uniform; got "
                             f"{self.flow.timestep_sampling!r}.")
        if self.flow.shift <= 0:
            raise ValueError(f"flow.shift must be > 0; got {self.flow.shift}.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
