"""Teacher training-step time on CPU: fp32 vs bf16 autocast, on real length-grouped SST-2 batches.

    python benchmarks/bench_precision.py [--steps 60] [--threads 2]

Same model (the packaged MiniLM-L6 with a fresh head), same batches, AdamW + clipping as the
teacher stage. Run on a quiet machine. Writes benchmarks/results/precision.{json,md}.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _common import ROOT, machine, write_results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    import torch
    import torch.nn.functional as F

    from confkd.config import load_params
    from confkd.io import read_jsonl
    from confkd.models.hf import load_classifier, load_tokenizer
    from confkd.runtime import cpu_has_native_bf16, select_precision
    from confkd.training.batching import length_grouped_batches, pad_batch, tokenize
    from confkd.training.loop import make_optimizer

    torch.set_num_threads(args.threads)
    tp = load_params(ROOT / "params.yaml").teacher
    train = read_jsonl(ROOT / "data/prepared/train.jsonl")
    tokenizer = load_tokenizer(tp.model)
    ids = tokenize(tokenizer, train["text"].tolist(), tp.max_length)
    labels = torch.tensor(train["label"].to_numpy())
    batches = length_grouped_batches(np.array([len(x) for x in ids]), tp.batch_size, 0, 0, tp.length_group_factor)
    batches = batches[:args.steps + 5]
    rows = {}
    for mode in ("no", "bf16", "no", "bf16"):  # interleaved, second pass reported (warm caches)
        torch.manual_seed(0)
        model = load_classifier(tp.model, ["0", "1"]).train()
        opt = make_optimizer(model, tp.learning_rate, tp.weight_decay)
        precision = select_precision(torch.device("cpu"), mode)
        times = []
        for i, b in enumerate(batches):
            t0 = time.perf_counter()
            enc = pad_batch([ids[j] for j in b], tokenizer.pad_token_id)
            with precision.autocast():
                logits = model(**enc).logits
            F.cross_entropy(logits.float(), labels[b]).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tp.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= 5:
                times.append(time.perf_counter() - t0)
        tokens = sum(len(ids[j]) for b in batches[5:] for j in b)
        rows[mode] = {"ms_per_step": 1000 * float(np.mean(times)), "steps_per_second": 1 / float(np.mean(times)),
                      "tokens_per_second": tokens / float(np.sum(times))}
        print(mode, rows[mode], flush=True)
    speedup = rows["no"]["ms_per_step"] / rows["bf16"]["ms_per_step"]
    md = ["# Teacher training step on CPU: fp32 vs bf16 autocast", "",
          f"Machine: {machine()}, native bf16: {cpu_has_native_bf16()}, {args.threads} threads. "
          f"Command: `python benchmarks/bench_precision.py --steps {args.steps} --threads {args.threads}`.",
          f"{args.steps} real length-grouped SST-2 training batches of {tp.batch_size} (after 5 warm-up steps).", "",
          "| precision | ms / step | steps / s | tokens / s |", "|---|---|---|---|"]
    md += [f"| {'fp32' if m == 'no' else m} | {r['ms_per_step']:.1f} | {r['steps_per_second']:.2f} | "
           f"{r['tokens_per_second']:.0f} |" for m, r in rows.items()]
    md += ["", f"bf16 speed-up: **{speedup:.2f}x**."]
    write_results("precision", {"machine": machine(), "native_bf16": cpu_has_native_bf16(), "rows": rows,
                                "speedup": speedup}, md)


if __name__ == "__main__":
    main()
