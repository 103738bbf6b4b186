"""SAELens's TopK SAE trained by SAELens's own trainer on rows of activations saved by
bench_sae.py; run in an interpreter that has `sae-lens` (not glassgpt's environment).

Input: one JSON argument (d_in, width, k, batch_tokens, lr, seed, rows, out). Output: the
weights in glassgpt's form (decoder rows of unit norm, the norms folded into the encoder,
which is what SAELens's rescale_acts_by_decoder_norm computes) and one JSON line:
{"seconds": ..., "version": ...}.
"""

import json
import sys
import time

import torch


def main() -> None:
    spec = json.loads(sys.argv[1])
    import sae_lens
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    torch.manual_seed(spec["seed"])
    rows = torch.load(spec["rows"], weights_only=True)
    batch = spec["batch_tokens"]
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=spec["d_in"], d_sae=spec["width"], k=spec["k"],
                                                dtype="float32", device="cpu"))
    steps = rows.size(0) // batch
    cfg = SAETrainerConfig(total_training_samples=steps * batch, train_batch_size_samples=batch, lr=spec["lr"],
                           lr_end=0.0, lr_decay_steps=steps // 5, device="cpu",
                           logger=LoggingConfig(log_to_wandb=False))
    batches = (rows[i * batch: (i + 1) * batch] for i in range(steps))
    started = time.perf_counter()
    SAETrainer(cfg, sae, batches).fit()
    seconds = time.perf_counter() - started
    with torch.no_grad():
        norms = sae.W_dec.norm(dim=1)  # (width,)
        weights = {"W_enc": sae.W_enc * norms, "b_enc": sae.b_enc * norms, "W_dec": sae.W_dec / norms[:, None],
                   "b_dec": sae.b_dec.clone()}
    torch.save({k: v.detach().contiguous() for k, v in weights.items()}, spec["out"])
    x = rows[:256]
    pre = torch.relu((x - weights["b_dec"]) @ weights["W_enc"] + weights["b_enc"])
    top = pre.topk(spec["k"], dim=-1)
    ours = torch.zeros_like(pre).scatter(-1, top.indices, top.values) @ weights["W_dec"] + weights["b_dec"]
    sae.eval()
    gap = float((ours - sae(x)).abs().max())  # the folded weights compute SAELens's function
    if gap > 1e-4:
        raise SystemExit(f"the weights do not convert: largest difference {gap}")
    print(json.dumps({"seconds": seconds, "version": sae_lens.__version__}))


if __name__ == "__main__":
    main()
