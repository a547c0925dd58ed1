"""Distillation step throughput: confkd's loop vs a straightforward KD loop.

    python benchmarks/bench_throughput.py [--steps 60]

Both train the same 3-layer student with the same KD loss, batch size and threads on the transfer
set. The straightforward loop draws random batches, pads every batch to max_length and runs the
teacher forward for every batch; confkd's loop reuses the cached teacher logits and pads length-
grouped batches dynamically. Writes benchmarks/results/throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _common import ROOT, machine, write_results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from confkd.config import StudentParams, load_params
    from confkd.distill.losses import kl
    from confkd.distill.students import build_transformer_student
    from confkd.io import read_jsonl
    from confkd.runtime import configure_threads
    from confkd.training.batching import length_grouped_batches, pad_batch, tokenize
    from confkd.training.teacher import load_logits

    params = load_params(ROOT / "params.yaml")
    threads = configure_threads(params.runtime.num_threads)
    max_length = params.teacher.max_length
    teacher = AutoModelForSequenceClassification.from_pretrained(ROOT / "models/teacher").eval()
    tokenizer = AutoTokenizer.from_pretrained(ROOT / "models/teacher")
    transfer = read_jsonl(ROOT / "data/prepared/transfer.jsonl")
    cached = torch.as_tensor(load_logits(ROOT / "artifacts/teacher/logits/transfer.npz"))
    ids = tokenize(tokenizer, transfer["text"].tolist(), max_length)
    lengths = np.array([len(x) for x in ids])

    def run(kind: str) -> float:
        torch.manual_seed(0)
        student = build_transformer_student(teacher, StudentParams(num_layers=3, init_scheme="skip")).train()
        opt = torch.optim.AdamW(student.parameters(), lr=1e-4)
        if kind == "confkd":
            batches = length_grouped_batches(lengths, args.batch_size, 0, 0)[: args.steps]
        else:
            rng = np.random.default_rng(0)
            batches = [rng.choice(len(ids), args.batch_size, replace=False) for _ in range(args.steps)]
        t0 = time.perf_counter()
        for b in batches:
            if kind == "confkd":
                enc = pad_batch([ids[i] for i in b], tokenizer.pad_token_id)
                t_logits = cached[b]
            else:
                enc = tokenizer([transfer["text"].iat[i] for i in b], padding="max_length", truncation=True,
                                max_length=max_length, return_tensors="pt")
                enc = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
                with torch.no_grad():
                    t_logits = teacher(**enc).logits
            loss = kl(student(**enc).logits, t_logits, 2.0)
            loss.backward()
            opt.step()
            opt.zero_grad()
        return len(batches) * args.batch_size / (time.perf_counter() - t0)

    run("confkd")  # warm-up (allocator, kernels)
    ours, naive = run("confkd"), run("naive")
    ratio = ours / naive
    md = ["# Distillation step throughput (SST-2 transfer set, 3-layer student)", "",
          f"Machine: {machine()}, {threads} torch threads. Command: `python benchmarks/bench_throughput.py --steps {args.steps}`.", "",
          "| loop | samples/s |", "|---|---|",
          f"| straightforward (teacher forward every batch, pad to {max_length}, random batches) | {naive:.1f} |",
          f"| confkd (cached teacher logits, length-grouped dynamic padding) | {ours:.1f} |",
          "", f"Speed-up: **{ratio:.2f}x** (target >= 1.5x)."]
    write_results("throughput", {"machine": machine(), "threads": threads, "steps": args.steps,
                                 "confkd_samples_per_second": ours, "naive_samples_per_second": naive,
                                 "speedup": ratio}, md)


if __name__ == "__main__":
    main()
