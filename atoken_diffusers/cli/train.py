"""``atoken train CONFIG``: run (or resume) a training stage; works as is or under ``accelerate launch``."""

from __future__ import annotations

from .checks import POSITIVE_INT


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train or fine-tune AToken (a stage config; resumes from its checkpoints)",
                       description="Train AToken with the paper's adversarial-free recipe. CONFIG is a YAML file or a "
                                   "bundled config name (tiny_stage1, stage1_images, ...). Multi-GPU/multi-node: "
                                   "`accelerate launch [--num_processes N ...] -m atoken_diffusers train CONFIG`.")
    p.add_argument("config")
    p.add_argument("--output-dir", help="run folder (checkpoints, log.jsonl, final/); default from the config")
    p.add_argument("--max-steps", type=POSITIVE_INT, help="stop after this many optimizer steps")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config entry, e.g. --set model.init_from=runs/s1/final --set optim.lr=1e-4")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..training.config import TrainConfig
    from ..training.overrides import overrides_from_args
    from ..training.trainer import Trainer

    try:
        config = TrainConfig.from_yaml(args.config, overrides_from_args(args))
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"atoken train: {err}") from None
    trainer = Trainer(config)
    records = trainer.train()
    if trainer.accelerator.is_main_process and records:
        print(f"done: step {records[-1]['step']}, loss {records[-1]['loss']:.4f}; model in {config.run.output_dir}")
