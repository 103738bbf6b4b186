"""`glassgpt train PRESET_OR_TOML [key=value ...] [--out DIR] [--resume]`."""

from __future__ import annotations

import datetime
from pathlib import Path

HELP = "train a model into a run directory"


def add_arguments(parser) -> None:
    parser.add_argument("config", metavar="PRESET_OR_TOML", nargs="?", default=None,
                        help="a preset name (cpu-baby, gpt2, ...) or a .toml file; with --resume, the run's own")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="override any model or train setting; model=FILE.py builds the model of your own pieces "
                             "(glassgpt learn)")
    parser.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<preset>-<time>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.set_defaults(trailing="overrides")


def run(args) -> None:
    from glassgpt.config import load_run_config
    from glassgpt.errors import UsageError
    from glassgpt.learn.yours import pieces_installer, split_model_override
    from glassgpt.training import train
    from glassgpt.training.runtime import Dist

    if args.config is not None and "=" in args.config:  # no preset given: it is the first override
        args.config, args.overrides = None, [args.config, *args.overrides]
    if args.resume and args.out is None:
        raise UsageError("--resume needs --out RUN_DIR, the run to continue")
    if args.config is None and not args.resume:
        raise UsageError("train needs a preset or TOML file, e.g. glassgpt train cpu-baby")
    learner_file, args.overrides = split_model_override(args.overrides)  # model=FILE.py: your own pieces
    if args.config is None:  # resume with the run's own settings
        from glassgpt.checkpoint import check_run_dir, read_config
        from glassgpt.config import apply_overrides

        run_config = apply_overrides(read_config(check_run_dir(args.out))[0], args.overrides)
    else:
        run_config = load_run_config(args.config, args.overrides)
    run_config = vocab_from_dataset(run_config, args.overrides)
    out = args.out or Path("runs") / f"{Path(args.config).stem}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    on_model = pieces_installer(learner_file) if learner_file else None
    if not Dist.from_env().is_main:  # under torchrun, the main process speaks for all
        train(run_config, out, resume=args.resume, on_model=on_model)
        return
    from glassgpt.progress import progress

    with progress("training", unit="step") as shown:  # a bar on a terminal; plain lines fill long silences
        train(run_config, out, resume=args.resume, log=shown.write, on_model=on_model,
              progress=lambda done, total, eta: shown.update(done, total, eta))
    print(f"run saved in {out}; sample it with: glassgpt sample {out}")


def vocab_from_dataset(run_config, overrides: list[str]):
    """`train PRESET dataset=NAME` without `vocab_size=`: the preset's vocab_size was for its own
    dataset, so the model gets the vocabulary of NAME's tokenizer instead (as it does when a
    TOML file names a dataset and no vocab_size)."""
    keys = {item.partition("=")[0].strip() for item in overrides}
    file_sets_vocab = run_config.given_model_keys is None or "vocab_size" in run_config.given_model_keys
    if "vocab_size" in keys or run_config.train.init_from or (file_sets_vocab and "dataset" not in keys):
        return run_config
    from glassgpt.config import apply_overrides
    from glassgpt.data import dataset_vocab_size

    vocab_size = dataset_vocab_size(run_config.train.dataset)
    if vocab_size is None or vocab_size == run_config.model.vocab_size:
        return run_config
    return apply_overrides(run_config, [f"vocab_size={vocab_size}"])
