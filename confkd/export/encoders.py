"""Raw text -> numpy graph inputs, for exported models.

The same encoders feed the ONNX graphs at export time (tracing), in parity checks and at inference,
so what was verified is what runs.

* :class:`HFTextEncoder` -- the saved tokenizer, dynamic padding to the longest text of the batch,
  truncation at ``max_length``; inputs ``input_ids`` and ``attention_mask`` (int64, [B, T]).
  ``token_type_ids`` are left out: single-sentence inputs use segment 0 everywhere, which is the
  model's default.
* :class:`DANTextEncoder` -- the saved n-gram vocabulary, looked up for the whole batch at once by
  :class:`confkd.export.dan_runtime.NgramTable` (the same bags as the PyTorch student's
  ``NgramFeaturizer.transform``, without a per-n-gram Python loop and without importing PyTorch; a
  vocabulary it cannot serve falls back to ``NgramFeaturizer.transform``), with each text's bag laid out
  as one row of a padded id matrix: ``ngram_ids`` (int64, [B, L]) and ``ngram_mask`` (float32, [B, L], 1
  for a real n-gram). ``L`` is the longest bag in the batch (at least 1, so a batch of texts without any known
  n-gram still has a valid shape). A padded matrix plus Gather and a masked mean runs in a handful of
  fast ONNX Runtime kernels, where ONNX's export of ``EmbeddingBag`` is a per-bag loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from confkd.errors import ModelNotFound


class HFTextEncoder:
    """Tokenise a batch of texts for a BERT-style sequence classifier graph."""

    input_names = ("input_ids", "attention_mask")

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = int(max_length)

    @classmethod
    def from_dir(cls, directory: str | Path, max_length: int) -> "HFTextEncoder":
        """Load the tokenizer files saved next to an exported graph."""
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(directory))
        except Exception as err:  # transformers raises OSError, ValueError, ... for broken folders
            raise ModelNotFound(f"could not load the tokenizer in '{directory}': {err}") from None
        return cls(tokenizer, max_length)

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_token_type_ids=False, return_tensors="np")
        return {"input_ids": enc["input_ids"].astype(np.int64, copy=False),
                "attention_mask": enc["attention_mask"].astype(np.int64, copy=False)}


class DANTextEncoder:
    """Featurise a batch of texts into a padded n-gram id matrix for the DAN graph."""

    input_names = ("ngram_ids", "ngram_mask")

    def __init__(self, featurizer):
        """``featurizer``: an ``NgramFeaturizer`` (served by an ``NgramTable`` when its vocabulary allows) or an
        ``NgramTable``."""
        from confkd.export.dan_runtime import NgramTable, UnservableVocabulary

        if not isinstance(featurizer, NgramTable):
            try:
                featurizer = NgramTable.from_featurizer(featurizer)
            except UnservableVocabulary:
                pass
        self.featurizer = featurizer
        self._padded = featurizer.padded if isinstance(featurizer, NgramTable) else None

    @classmethod
    def from_file(cls, path: str | Path) -> "DANTextEncoder":
        from confkd.export.dan_runtime import NgramTable, UnservableVocabulary

        try:
            return cls(NgramTable.from_featurizer_file(path))  # raises ModelNotFound naming the file
        except UnservableVocabulary:
            from confkd.models.dan import NgramFeaturizer

            return cls(NgramFeaturizer.load(path))

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        if self._padded is not None:
            return self._padded(texts)
        indices, offsets = self.featurizer.transform(texts)
        from confkd.export.dan_runtime import pad_bags

        return pad_bags(indices.numpy(), offsets.numpy())
