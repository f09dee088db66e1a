"""``atoken train-generator {dit,ar} --shards DIR --output-dir DIR``: train a generator on encoded shards (resumes from
its checkpoints; works as is or under ``accelerate launch``). The result is a pipeline folder in OUTPUT/pipeline."""

from __future__ import annotations

import argparse

from .checks import POSITIVE_FLOAT, POSITIVE_INT


def add_parser(sub) -> None:
    p = sub.add_parser("train-generator", help="train a DiT (continuous latents) or AR (FSQ tokens) generator on "
                                               "shards of `atoken encode-dataset`",
                       description="Train ATokenDiT (flow matching) or ATokenARTransformer on pre-encoded shards. "
                                   "Settings come from --config (YAML: model, data, optim, run, flow sections), then "
                                   "the flags, then --set KEY=VALUE. Rerunning the same command resumes. Several "
                                   "GPUs: `accelerate launch -m atoken_diffusers train-generator ...`.")
    p.add_argument("kind", choices=["dit", "ar"])
    p.add_argument("--config", help="YAML file with the sections model, data, optim, run, flow")
    p.add_argument("--shards", help="shard folder (data.shards)")
    p.add_argument("--output-dir", help="run folder: checkpoints, log.jsonl, pipeline/ (run.output_dir)")
    p.add_argument("--preset", help="model size (model.preset): tiny, S, B, L, XL (DiT); tiny, B, L (AR)")
    p.add_argument("--max-steps", type=POSITIVE_INT, help="stop after this many optimizer steps (run.max_steps)")
    p.add_argument("--batch-size", type=POSITIVE_INT, help="per process (run.batch_size)")
    p.add_argument("--lr", type=POSITIVE_FLOAT, help="peak learning rate (optim.lr)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config entry, e.g. --set run.checkpoint_every=1000 "
                        "--set model.overrides.num_layers=8")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..generation.image.train_ar import ARTrainer
    from ..generation.image.train_dit import DiTTrainer
    from ..generation.training.config import GeneratorTrainConfig
    from ..training.overrides import overrides_from_args

    overrides = overrides_from_args(args, {"shards": "data.shards", "preset": "model.preset",
                                           "batch_size": "run.batch_size", "lr": "optim.lr"})
    try:
        config = GeneratorTrainConfig.from_yaml(args.config, overrides)
        trainer = (DiTTrainer if args.kind == "dit" else ARTrainer)(config)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"atoken train-generator: {err}") from None
    records = trainer.train()
    if trainer.accelerator.is_main_process and records:
        print(f"done: step {records[-1]['step']}, loss {records[-1]['loss']:.4f}; pipeline in "
              f"{config.run.output_dir}/pipeline")
