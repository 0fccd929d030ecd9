"""Training throughput on CPU: our proxy trainer against a plain litgpt loop, same model and batch.

"ours" is `regmix.train.sweep.train_proxies` (the one training loop, single engine) end to end
(mixture sampling from memory-mapped shards, warm-up, grad clipping, final validation, result file;
wandb off), timed from call to return.
"litgpt" is the textbook loop: litgpt GPT, F.cross_entropy, backward, torch AdamW (default
implementation), one fixed random batch, no data loading or evaluation. Both alternate `--repeats`
times in one process and the best time of each counts, so a busy machine hurts both alike.

    python bench/train_throughput.py [--model tinyllama_demo --vocab 8192 --block 256 --batch 16 --steps 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from regmix.core.mixture import Mixture
from regmix.data.corpus import CorpusManifest, Shard, TokenizerInfo
from regmix.settings.run_config import RunConfig
from regmix.settings.training import TrainingSettings
from regmix.train.models import build_model, non_embedding_parameters
from regmix.train.sweep import train_proxies

DOMAINS = ("web", "code", "books")


def random_corpus(root: Path, vocab: int, tokens: int) -> CorpusManifest:
    """A prepared corpus of random tokens, three domains, in the layout `regmix.prepare` writes."""
    rng = np.random.default_rng(0)
    manifest = CorpusManifest(root, "bench", TokenizerInfo("random", "0" * 64, vocab, 0, ""), "uint16")
    for split in ("train", "valid"):
        (root / split).mkdir(parents=True)
        for domain in DOMAINS:
            relative = f"{split}/{domain}_0.bin"
            rng.integers(0, vocab, tokens, dtype=np.uint16).tofile(root / relative)
            manifest.shards[split][domain] = [Shard(relative, relative, "0" * 64, tokens, 1)]
    manifest.save()
    return manifest


def litgpt_loop(model_name: str, vocab: int, block: int, batch: int, steps: int) -> float:
    """Seconds for `steps` steps of the plain loop, model construction included as in ours."""
    started = time.perf_counter()
    torch.manual_seed(0)
    model = build_model(model_name, vocab, block)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, betas=(0.9, 0.95), weight_decay=0.1)
    tokens = torch.randint(0, vocab, (batch, block + 1))
    for _ in range(steps):
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return time.perf_counter() - started


def ours(manifest: CorpusManifest, run_dir: Path, model_name: str, block: int, batch: int, steps: int) -> float:
    settings = TrainingSettings(model_name=model_name, global_batch_size=batch, micro_batch_size=batch,
                                max_step=steps, warmup_steps=2, eval_step_interval=steps,
                                save_step_interval=10 * steps, block_size=block, eval_tokens=block)
    config = RunConfig("bench", Mixture.from_dict({"web": 0.5, "code": 0.3, "books": 0.2}), DOMAINS, settings)
    started = time.perf_counter()
    train_proxies([config], manifest, [run_dir], wandb_mode="off")
    return time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tinyllama_demo")
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--block", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tokens = args.steps * args.batch * args.block
    with tempfile.TemporaryDirectory() as tmp:
        manifest = random_corpus(Path(tmp) / "corpus", args.vocab, 200_000)
        best = {"litgpt": float("inf"), "ours": float("inf")}
        for repeat in range(args.repeats):
            plain = litgpt_loop(args.model, args.vocab, args.block, args.batch, args.steps)
            best["litgpt"] = min(best["litgpt"], plain)
            best["ours"] = min(best["ours"], ours(manifest, Path(tmp) / f"run{repeat}", args.model, args.block,
                                                  args.batch, args.steps))
    size = non_embedding_parameters(build_model(args.model, args.vocab, args.block))
    print(f"{args.model} ({size:,} non-embedding parameters), vocab {args.vocab}, {args.batch} x {args.block} "
          f"tokens a step, {args.steps} steps, {torch.get_num_threads()} threads")
    rate = {k: tokens / v for k, v in best.items()}
    print(f"litgpt loop: {rate['litgpt']:10,.0f} tokens/s")
    print(f"ours:        {rate['ours']:10,.0f} tokens/s")
    print(f"ratio ours / litgpt: {rate['ours'] / rate['litgpt']:.2f}")


if __name__ == "__main__":
    main()
