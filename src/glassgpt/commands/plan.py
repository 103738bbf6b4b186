"""`glassgpt plan PRESET_OR_TOML --gpus N`: the memory a training config needs per GPU."""

from __future__ import annotations

from glassgpt.commands.options import capped_int

HELP = "memory per GPU of a training config, and the GPUs it fits"
DESCRIPTION = ("Bytes per GPU of the weights, gradients, optimizer state, working copies and activations of "
               "training a config at its batch_size, on N GPUs under ddp or fsdp, and which GPU memory sizes "
               "hold it. Computed from the config; nothing is allocated.")


def add_arguments(parser) -> None:
    parser.add_argument("config", metavar="PRESET_OR_TOML", help="a preset name (gpt2, ...) or a .toml file")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override any model or train setting")
    parser.add_argument("--gpus", type=capped_int(1 << 16), default=1, help="GPUs (ranks) the run is spread over")
    parser.add_argument("--parallel", choices=("ddp", "fsdp"), default=None, help="default: the config's parallel")
    parser.add_argument("--activation-checkpointing", action="store_true", default=None,
                        help="recompute each block in the backward pass (default: the config's)")
    parser.set_defaults(trailing="overrides")


def run(args) -> None:
    from glassgpt.config import load_run_config
    from glassgpt.training.plan import describe, memory_plan

    run_config = load_run_config(args.config, args.overrides)
    print(describe(memory_plan(run_config, args.gpus, args.parallel, args.activation_checkpointing)))
