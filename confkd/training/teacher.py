"""The ``teacher`` stage: fine-tune an encoder, save it in HF format, cache its logits.

Later stages reuse the cached logits (train/dev/test/transfer) instead of re-running the teacher.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from confkd import distributed
from confkd.config import Params
from confkd.data.prepare import SPLITS, UNLABELED
from confkd.data.splitting import sample_index
from confkd.errors import DataError
from confkd.evaluation.metrics import classification_metrics
from confkd.io import atomic_dir, atomic_path, fingerprint, provenance, read_jsonl, write_json, write_text
from confkd.layout import DEFAULT, TeacherPaths
from confkd.models.hf import count_parameters, load_classifier, load_tokenizer
from confkd.runtime import configure_threads, seed_everything, select_device, select_precision
from confkd.training.batching import length_grouped_batches, pad_batch, tokenize
from confkd.training.inference import predict_logits
from confkd.training.loop import LoopConfig, fit

log = logging.getLogger(__name__)


def load_prepared(prepared_dir: Path) -> tuple[list[str], dict[str, pd.DataFrame]]:
    labels_file = prepared_dir / "labels.json"
    if not labels_file.exists():
        raise DataError(f"{labels_file}: not found (run the prepare stage first)")
    labels = json.loads(labels_file.read_text(encoding="utf-8"))["labels"]
    return labels, {s: read_jsonl(prepared_dir / f"{s}.jsonl") for s in SPLITS}


def save_logits(path: Path, ids: list[str], logits: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, ids=np.asarray(ids, dtype=str), logits=logits.astype(np.float32))


def load_logits(path: Path, expected_ids: list[str] | None = None) -> np.ndarray:
    if not path.exists():
        raise DataError(f"{path}: teacher logits not found (run the teacher stage first)")
    with np.load(path) as data:
        ids, logits = data["ids"], data["logits"]
    if expected_ids is not None and list(ids) != list(expected_ids):
        raise DataError(f"{path}: example ids do not match the prepared data (re-run the teacher stage)")
    return logits


def reference_params(params: Params) -> Params:
    """The reference teacher's params: the teacher's recipe with seed ``evaluate.kappa.reference_seed``."""
    return params.model_copy(update={"seed": params.evaluate.kappa.reference_seed})


def train_teacher(params: Params, paths: TeacherPaths = TeacherPaths(),
                  logits_sample: tuple[int, int] | None = None) -> dict:
    """Fine-tune the teacher, save it and its logits.

    ``logits_sample``: None saves logits for every split (what distillation and augmentation read); a pair
    ``(size, seed)`` saves them for dev, test and the seeded ``size``-row sample of train only (no transfer
    set): the examples the evaluate stage measures kappa on, all the reference teacher is read for.
    """
    tp = params.teacher
    seed_everything(params.seed, params.runtime.deterministic)
    threads = configure_threads(params.runtime.num_threads)
    device = distributed.init_from_env(select_device(params.runtime.device))
    precision = select_precision(device, params.runtime.mixed_precision)
    log.info("device %s, %d threads, mixed precision %s", device, threads, precision.dtype)

    labels, frames = load_prepared(paths.prepared_dir)
    tokenizer = load_tokenizer(tp.model)
    model = load_classifier(tp.model, labels).to(device)
    log.info("teacher %s: %.1fM parameters", tp.model, count_parameters(model) / 1e6)

    train, dev = frames["train"], frames["dev"]
    train_ids = tokenize(tokenizer, train["text"].tolist(), tp.max_length)
    dev_ids = tokenize(tokenizer, dev["text"].tolist(), tp.max_length)
    train_labels = torch.tensor(train["label"].to_numpy(), dtype=torch.long)
    dev_labels = dev["label"].to_numpy()
    lengths = np.array([len(x) for x in train_ids])

    def batches_for_epoch(epoch: int):
        return length_grouped_batches(lengths, tp.batch_size, params.seed, epoch, tp.length_group_factor)

    def step_loss(m, batch_idx):
        enc = {k: v.to(device) for k, v in pad_batch([train_ids[i] for i in batch_idx], tokenizer.pad_token_id).items()}
        logits = m(**enc).logits
        return F.cross_entropy(logits.float(), train_labels[batch_idx].to(device))

    def evaluate(m):
        logits = predict_logits(m, tokenizer, [], input_ids=dev_ids, max_length=tp.max_length,
                                batch_size=tp.eval_batch_size, device=device, precision=precision, desc="dev")
        return classification_metrics(logits, dev_labels, prefix="dev_")

    loop_cfg = LoopConfig.from_settings(tp, selection_metric=f"dev_{tp.selection_metric}",
                                        num_layers=getattr(model.config, "num_hidden_layers", None))
    result = fit(
        model, batches_for_epoch=batches_for_epoch, step_loss=step_loss, batch_size_of=len, evaluate=evaluate,
        cfg=loop_cfg, precision=precision, checkpoint_dir=paths.checkpoint_dir,
        fingerprint=fingerprint(params.teacher.model_dump_json(), str(params.seed), paths.prepared_dir), desc="teacher",
    )
    log.info("training done: %d steps (%.2f epochs), best step %d, %.1f samples/s",
             result.steps, result.epochs_run, result.best_step, result.samples_per_second)
    if not distributed.is_main():  # every rank holds the same weights; rank 0 saves and labels
        return {}

    with atomic_dir(paths.model_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    # Teacher logits for every split (the transfer set reuses train logits for its train rows), or for the
    # examples kappa is measured on.
    t0 = time.perf_counter()
    logits: dict[str, np.ndarray] = {}
    predict = dict(max_length=tp.max_length, batch_size=tp.eval_batch_size, device=device, precision=precision)
    rows = np.arange(len(train)) if logits_sample is None else sample_index(len(train), *logits_sample)
    ids = {split: frames[split]["id"].tolist() for split in ("dev", "test")}
    ids["train"] = train["id"].to_numpy()[rows].tolist()
    logits["train"] = predict_logits(model, tokenizer, [], input_ids=[train_ids[i] for i in rows],
                                     desc="logits train", **predict)
    logits["dev"] = predict_logits(model, tokenizer, [], input_ids=dev_ids, desc="logits dev", **predict)
    logits["test"] = predict_logits(model, tokenizer, frames["test"]["text"].tolist(), desc="logits test", **predict)
    n_predicted = len(rows) + len(dev_ids) + len(frames["test"])
    if logits_sample is None:
        transfer = frames["transfer"]
        by_id = dict(zip(train["id"], logits["train"]))
        unl = transfer["label"].to_numpy() == UNLABELED
        unl_logits = predict_logits(model, tokenizer, transfer.loc[unl, "text"].tolist(), desc="logits transfer",
                                    **predict)
        tr = np.zeros((len(transfer), len(labels)), dtype=np.float32)
        tr[unl] = unl_logits
        for i in np.flatnonzero(~unl):
            if transfer["id"].iat[i] not in by_id:
                raise DataError(f"transfer row {transfer['id'].iat[i]} is not in the train split (re-run prepare)")
            tr[i] = by_id[transfer["id"].iat[i]]
        logits["transfer"], ids["transfer"] = tr, transfer["id"].tolist()
        n_predicted += int(unl.sum())
    infer_seconds = time.perf_counter() - t0

    with atomic_dir(paths.logits_dir) as tmp:
        for split in logits:
            save_logits(tmp / f"{split}.npz", ids[split], logits[split])

    metrics = classification_metrics(logits["test"], frames["test"]["label"].to_numpy())
    metrics.update(classification_metrics(logits["dev"], dev_labels, prefix="dev_"))
    metrics.update({
        "train_seconds": round(result.train_seconds, 2),
        "eval_seconds": round(result.eval_seconds, 2),
        "train_samples_per_second": round(result.samples_per_second, 2),
        "inference_samples_per_second": round(n_predicted / infer_seconds, 2),
        "train_examples": int(len(train)),
        "steps": result.steps,
        "best_step": result.best_step,
        "epochs_run": round(result.epochs_run, 4),
        "stopped_early": int(result.stopped_early),
        "parameters": count_parameters(model),
    })
    metrics = {**provenance(paths.prepared_dir), **metrics}
    write_json(paths.metrics_path, metrics)
    _write_history(paths.history_path, result.history)
    if not tp.keep_checkpoints and paths.checkpoint_dir.exists():
        shutil.rmtree(paths.checkpoint_dir, ignore_errors=True)
    log.info("teacher test accuracy %.4f, macro-F1 %.4f, ECE %.4f", metrics["accuracy"], metrics["macro_f1"], metrics["ece"])
    return metrics


def label_with_teacher(params: Params, texts: list[str], teacher_dir: Path, batch_size: int,
                       work_dir: Path = DEFAULT.augment_work, shard_size: int = 20000,
                       desc: str = "teacher labels") -> np.ndarray | None:
    """Teacher logits for new texts (augmentation, large unlabeled pools) with the saved teacher.

    Labelled in resumable shards under ``work_dir`` (see :mod:`confkd.training.labelling`); under
    torchrun the ranks share the shards and only rank 0 gets the logits (the others get ``None``).
    """
    from confkd.models.hf import load_saved_classifier
    from confkd.training.labelling import label_in_shards

    model, tokenizer = load_saved_classifier(teacher_dir, " (run the teacher stage first)")
    if not texts:
        return np.zeros((0, model.config.num_labels), dtype=np.float32)
    configure_threads(params.runtime.num_threads)
    device = distributed.init_from_env(select_device(params.runtime.device))
    precision = select_precision(device, params.runtime.mixed_precision)
    model = model.to(device)
    weights = fingerprint(*sorted(teacher_dir.glob("*.safetensors")))

    def predict(chunk: list[str]) -> np.ndarray:
        return predict_logits(model, tokenizer, chunk, max_length=params.teacher.max_length, batch_size=batch_size,
                              device=device, precision=precision, desc=desc)

    return label_in_shards(texts, predict, work_dir, f"{weights}|{params.teacher.max_length}|{batch_size}", shard_size)


def _write_history(path: Path, history: list[dict]) -> None:
    df = pd.DataFrame(history)
    write_text(path, df.to_csv(index=False))
