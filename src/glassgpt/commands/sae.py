"""`glassgpt sae RUN_DIR --hook NAME`: a sparse autoencoder on a hook point, evaluated, its features paged."""

from __future__ import annotations

from pathlib import Path

from glassgpt.commands.options import (add_device, add_run_dir, add_threads, capped_int, float_arg, non_negative_int,
                                      positive_int, seed_int)

HELP = "train a sparse autoencoder on a hook point of a run, evaluate it, page its features"
DESCRIPTION = ("Streams the hook's activations on the run's training split (nothing stored but one shuffled chunk), "
               "trains a TopK SAE, evaluates it on the validation split (L0, FVU, CE loss recovered) and writes "
               "RUN_DIR/sae/HOOK/features.html.")


def add_arguments(parser) -> None:
    add_run_dir(parser)
    parser.add_argument("--hook", required=True,
                        help="a hook point of shape (B, T, C) or per head, e.g. blocks.1.resid_post")
    parser.add_argument("--head", type=non_negative_int, default=None, help="one head of a per-head hook (attn.q, k, v, z)")
    parser.add_argument("--width", type=capped_int(1 << 20), default=None, help="features (default: 8 x the hook's width)")
    parser.add_argument("--k", type=positive_int, default=32, help="active features per token (TopK)")
    parser.add_argument("--batch-topk", action="store_true", help="BatchTopK: k per token on average over a batch")
    parser.add_argument("--tokens", type=capped_int(10**10), default=2_000_000, help="training tokens")
    parser.add_argument("--batch-size", type=capped_int(1 << 16), default=1024, help="tokens per step")
    parser.add_argument("--lr", type=float_arg, default=1e-3, help="the learning rate")
    parser.add_argument("--seed", type=seed_int, default=0, help="seed of the initialisation and the shuffle")
    add_device(parser)
    parser.add_argument("--out", type=Path, default=None, help="folder (default: RUN_DIR/sae/HOOK)")
    parser.add_argument("--resume", action="store_true", help="continue the SAE in --out (or the default folder)")
    parser.add_argument("--pages-tokens", type=capped_int(1 << 24), default=65_536, metavar="N",
                        help="validation tokens the feature page reads for each feature's top contexts (at most "
                             "the whole split)")
    add_threads(parser)


def run(args) -> None:
    from glassgpt.device import resolve_device
    from glassgpt.progress import stages
    from glassgpt.sae import run_sae
    from glassgpt.stop import StopFlag
    from glassgpt.threads import fitted_threads

    with StopFlag(), fitted_threads(args.threads, say=False) as threads, stages() as shown:  # on stdout
        def progress(done: int, total: int, stage: str = "SAE steps") -> None:
            shown(stage, done, total)
            threads.recheck()  # between steps: the machine may have got busier, or quieter

        result = run_sae(args.run_dir, args.hook, head=args.head, width=args.width, k=args.k,
                         batch_topk=args.batch_topk, tokens=args.tokens, batch_tokens=args.batch_size, lr=args.lr,
                         seed=args.seed, device=str(resolve_device(args.device)), out=args.out, resume=args.resume,
                         progress=progress, pages_tokens=args.pages_tokens)
    print(f"SAE at {args.hook}: L0 {result['l0']:.1f}, FVU {result['fvu']:.3f}, CE loss recovered "
          f"{result['ce_loss_recovered']:.3f}, {result['dead_features']} dead and {result['dense_features']} dense "
          f"of {result['width']} features, {result['tokens_per_s']:,.0f} training tokens/s")
