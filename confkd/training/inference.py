"""Batched, length-sorted inference that returns logits in the input order."""

from __future__ import annotations

import numpy as np
import torch

from confkd.runtime import progress, Precision
from confkd.training.batching import pad_batch, sorted_batches, tokenize


@torch.inference_mode()
def predict_logits(
    model,
    tokenizer,
    texts: list[str],
    *,
    max_length: int,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    precision: Precision | None = None,
    desc: str = "predict",
    input_ids: list[list[int]] | None = None,
) -> np.ndarray:
    """``[N, num_labels]`` float32 logits for ``texts`` (order preserved)."""
    device = torch.device(device)
    ids = input_ids if input_ids is not None else tokenize(tokenizer, texts, max_length)
    was_training = model.training
    model.eval()
    out = np.zeros((len(ids), model.config.num_labels), dtype=np.float32)
    lengths = np.array([len(x) for x in ids])
    for batch in progress(sorted_batches(lengths, batch_size), desc=desc, unit="batch", leave=False, disable=len(ids) == 0):
        enc = {k: v.to(device) for k, v in pad_batch([ids[i] for i in batch], tokenizer.pad_token_id).items()}
        if precision is not None:
            with precision.autocast():
                logits = model(**enc).logits
        else:
            logits = model(**enc).logits
        out[batch] = logits.float().cpu().numpy()
    model.train(was_training)
    return out
