"""Sparse Deep Averaging Network (DAN) student, after Ye et al. (NAACL 2022), "Sparse Distillation:
Speeding Up Text Classification by Using Bigger Student Models".

A text is represented by the word 1..4-grams it contains, restricted to the K most frequent n-grams of
the transfer set; the model averages their embeddings (a sparse ``nn.EmbeddingBag``) and classifies the
average with a small MLP. The embedding table is huge but only the rows of a text's n-grams are touched,
so inference costs a few thousand multiply-adds per example.

Pieces:

* :class:`NgramFeaturizer` -- vocabulary chosen with scikit-learn's ``CountVectorizer`` at fit time;
  ``transform`` is pure Python (regex + dict look-ups) and needs nothing but the saved JSON file.
* :class:`DANClassifier` -- the ``nn.Module`` (``forward(indices, offsets) -> logits``).
* :func:`make_dan_optimizers` -- ``SparseAdam`` for the embedding table, ``AdamW`` for the MLP.
* :class:`DANStudent` -- featurizer + model + label names, with ``predict_logits`` and
  ``save_pretrained`` / ``from_pretrained``.

Paper scale is K = 1M n-grams and 1000-dim embeddings (~1B parameters); the defaults in
:class:`DANConfig` are sized for a 2-core CPU.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from confkd.errors import DataError, ModelNotFound, ParamsError
from confkd.io import atomic_dir, read_model_json, write_json

__all__ = [
    "DEFAULT_TOKEN_PATTERN",
    "DANConfig",
    "NgramFeaturizer",
    "DANClassifier",
    "make_dan_optimizers",
    "DANStudent",
]

# scikit-learn's default pattern is r"(?u)\b\w\w+\b", which drops 1-character tokens ("a", "i", "2").
DEFAULT_TOKEN_PATTERN = r"(?u)\b\w+\b"
# Patterns whose tokens never contain whitespace, so an n-gram string splits back into its tokens
# unambiguously (a precondition of the prefix-pruned transform).
_WHITESPACE_FREE_PATTERNS = frozenset({DEFAULT_TOKEN_PATTERN, r"(?u)\b\w\w+\b", r"\b\w+\b", r"\b\w\w+\b", r"\w+"})

FEATURIZER_FORMAT = "confkd-ngram-featurizer"
MODEL_FORMAT = "confkd-dan"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FEATURIZER_FILE = "featurizer.json"


# --------------------------------------------------------------------------------------------------
# Featurizer
# --------------------------------------------------------------------------------------------------


def _check_ngram_range(ngram_range: Any) -> tuple[int, int]:
    try:
        lo, hi = ngram_range
    except (TypeError, ValueError):
        raise ParamsError(f"ngram_range must be a pair (min_n, max_n), got {ngram_range!r}") from None
    if isinstance(lo, bool) or isinstance(hi, bool) or not isinstance(lo, (int, np.integer)) or not isinstance(hi, (int, np.integer)):
        raise ParamsError(f"ngram_range must hold two integers, got {ngram_range!r}")
    if not 1 <= lo <= hi:
        raise ParamsError(f"ngram_range must satisfy 1 <= min_n <= max_n, got {ngram_range!r}")
    return int(lo), int(hi)


class NgramFeaturizer:
    """Maps raw texts to bags of n-gram ids for ``nn.EmbeddingBag``.

    Tokenisation is exactly CountVectorizer's word analyzer with ``lowercase=True``,
    ``strip_accents=None``, no stop words and ``token_pattern`` (default keeps 1-character tokens):
    ``text.lower()``, ``re.findall(token_pattern)``, then n-grams joined with single spaces.

    Each n-gram occurrence is emitted once (multiplicity = CountVectorizer's count), so the
    ``EmbeddingBag`` mean is the count-weighted mean. With ``binary=True`` each distinct n-gram is
    emitted once per text (= ``CountVectorizer(binary=True)``).

    Vocabulary order (= embedding row): descending transfer-set count, ties broken by the n-gram
    string (Python ``str`` order). Row 0 is the most frequent n-gram.

    Speed: a vocabulary chosen by :meth:`fit` is *prefix-closed* (every kept n-gram's (n-1)-token prefix
    is kept too: it occurs at least as often and sorts first on ties), so ``transform`` extends an n-gram
    only while its prefix is known, skipping most 3-/4-gram look-ups. This is exact; a vocabulary that
    is not prefix-closed (e.g. hand-made via :meth:`from_dict`) falls back to enumerating every n-gram.
    The order of ids inside a bag differs between the two paths (irrelevant to the mean up to float
    rounding); the multiset is the same.
    """

    def __init__(self, token_pattern: str = DEFAULT_TOKEN_PATTERN, lowercase: bool = True, binary: bool = False):
        try:
            pattern = re.compile(token_pattern)
        except (re.error, TypeError) as err:
            raise ParamsError(f"token_pattern {token_pattern!r} is not a valid regular expression: {err}") from None
        if pattern.groups > 1:
            raise ParamsError(f"token_pattern {token_pattern!r} has more than one capturing group")
        self.token_pattern = token_pattern
        self.lowercase = bool(lowercase)
        self.binary = bool(binary)
        self.ngram_range: tuple[int, int] = (1, 4)
        self.max_features: int | None = None
        self.min_df: int | float = 1
        self._findall = pattern.findall
        self._vocabulary: list[str] | None = None
        self._index: dict[str, int] = {}
        self._prefix_closed = False

    # -- vocabulary --------------------------------------------------------------------------------

    def fit(self, texts: Iterable[str], max_features: int, ngram_range: tuple[int, int] = (1, 4),
            min_df: int | float = 1) -> "NgramFeaturizer":
        """Choose the ``max_features`` most frequent n-grams (total count) of ``texts``.

        ``min_df`` (documents, or a fraction if float) is applied before the frequency cut, as in
        CountVectorizer. Unlike ``CountVectorizer(max_features=...)``, whose tie-break at the cut is
        whatever ``np.argsort`` (not stable) happens to return, ties are broken by the n-gram string,
        so the vocabulary is a documented function of the counts. Memory: like CountVectorizer, the full
        document-term matrix over *all* n-grams of ``texts`` is built before the cut.
        """
        from sklearn.feature_extraction.text import CountVectorizer

        if isinstance(max_features, bool) or not isinstance(max_features, (int, np.integer)) or max_features < 1:
            raise ParamsError(f"max_features must be a positive integer, got {max_features!r}")
        lo, hi = _check_ngram_range(ngram_range)
        if isinstance(texts, str):
            raise DataError("texts must be a sequence of strings, not a single string")
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise DataError(f"text #{i} is {type(text).__name__}, not str")
        if not texts:
            raise DataError("cannot fit an n-gram vocabulary on zero texts")
        vectorizer = CountVectorizer(
            lowercase=self.lowercase, token_pattern=self.token_pattern, ngram_range=(lo, hi),
            min_df=min_df, max_features=None, dtype=np.int64,
        )
        try:
            counts = vectorizer.fit_transform(texts)
        except ValueError as err:  # "empty vocabulary", bad min_df, ...
            raise DataError(f"could not build an n-gram vocabulary: {err}") from None
        # CountVectorizer orders features by string, so a stable sort on -count breaks ties by string.
        names = vectorizer.get_feature_names_out()
        totals = np.asarray(counts.sum(axis=0)).ravel()
        keep = np.argsort(-totals, kind="stable")[: int(max_features)]
        self._set_vocabulary([str(names[j]) for j in keep])
        self.ngram_range = (lo, hi)
        self.max_features = int(max_features)
        self.min_df = min_df
        return self

    def _set_vocabulary(self, vocabulary: list[str]) -> None:
        index = {term: i for i, term in enumerate(vocabulary)}
        if len(index) != len(vocabulary):
            raise ModelNotFound("featurizer vocabulary has duplicate entries")
        self._vocabulary = list(vocabulary)
        self._index = index
        self._prefix_closed = all(term.rpartition(" ")[0] in index for term in vocabulary if " " in term)

    @property
    def is_fitted(self) -> bool:
        return self._vocabulary is not None

    @property
    def vocabulary(self) -> list[str]:
        """N-grams in index order (a copy)."""
        self._require_fitted()
        return list(self._vocabulary)

    @property
    def vocabulary_(self) -> dict[str, int]:
        """n-gram -> index (a copy), in the shape ``CountVectorizer(vocabulary=...)`` accepts."""
        self._require_fitted()
        return dict(self._index)

    @property
    def vocab_size(self) -> int:
        self._require_fitted()
        return len(self._vocabulary)

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def uses_prefix_pruning(self) -> bool:
        """Whether ``transform`` takes the fast prefix-pruned path (see the class docstring)."""
        return (self._vocabulary is not None and self._prefix_closed and self.ngram_range[0] == 1
                and self.token_pattern in _WHITESPACE_FREE_PATTERNS)

    def _require_fitted(self) -> None:
        if self._vocabulary is None:
            raise RuntimeError("NgramFeaturizer is not fitted: call fit() or load() first")

    # -- analysis ----------------------------------------------------------------------------------

    def analyze(self, text: str) -> list[str]:
        """All n-grams of ``text`` in CountVectorizer's analyzer order (vocabulary not applied)."""
        return self._ngrams(self._findall(text.lower() if self.lowercase else text))

    def _ngrams(self, tokens: list[str]) -> list[str]:
        lo, hi = self.ngram_range
        n_tokens = len(tokens)
        grams = list(tokens) if lo == 1 else []
        join = " ".join
        for n in range(max(lo, 2), min(hi, n_tokens) + 1):
            grams.extend(map(join, zip(*[tokens[j:] for j in range(n)])))
        return grams

    def transform(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(indices [total] int64, offsets [B] int64)`` for ``nn.EmbeddingBag(indices, offsets)``.

        A text without any known n-gram gives an empty bag (its offset equals the next one, or
        ``len(indices)`` for the last text); ``EmbeddingBag`` returns a zero vector for it.
        """
        self._require_fitted()
        if isinstance(texts, str):
            raise DataError("texts must be a sequence of strings, not a single string")
        get = self._index.get
        findall = self._findall
        lowercase = self.lowercase
        binary = self.binary
        max_n = self.ngram_range[1]
        pruned = self.uses_prefix_pruning
        ngrams = self._ngrams
        indices: list[int] = []
        offsets: list[int] = []
        for i, text in enumerate(texts):
            offsets.append(len(indices))
            try:
                tokens = findall(text.lower() if lowercase else text)
            except (AttributeError, TypeError):
                raise DataError(f"text #{i} is {type(text).__name__}, not str") from None
            if pruned:
                ids = []
                append = ids.append
                for k, gram in enumerate(tokens):
                    j = get(gram)
                    if j is None:
                        continue  # no longer n-gram starting here can be in the vocabulary
                    append(j)
                    for token in tokens[k + 1:k + max_n]:
                        gram = f"{gram} {token}"
                        j = get(gram)
                        if j is None:
                            break
                        append(j)
            else:
                ids = [j for j in map(get, ngrams(tokens)) if j is not None]
            if binary:
                ids = list(dict.fromkeys(ids))
            indices.extend(ids)
        return torch.tensor(indices, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)

    __call__ = transform

    # -- persistence -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        self._require_fitted()
        return {
            "format": FEATURIZER_FORMAT,
            "version": FORMAT_VERSION,
            "token_pattern": self.token_pattern,
            "lowercase": self.lowercase,
            "binary": self.binary,
            "ngram_range": list(self.ngram_range),
            "max_features": self.max_features,  # informational (fit settings)
            "min_df": self.min_df,
            "vocab_size": len(self._vocabulary),
            "vocabulary": list(self._vocabulary),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NgramFeaturizer":
        """Rebuild from :meth:`to_dict` output; raises ``ModelNotFound`` for invalid content."""
        if not isinstance(data, dict):
            raise ModelNotFound(f"featurizer data must be a JSON object, got {type(data).__name__}")
        if data.get("format") != FEATURIZER_FORMAT:
            raise ModelNotFound(f"not an n-gram featurizer (format {data.get('format')!r}, expected {FEATURIZER_FORMAT!r})")
        if data.get("version") != FORMAT_VERSION:
            raise ModelNotFound(f"unsupported featurizer version {data.get('version')!r} (this code reads {FORMAT_VERSION})")
        try:
            token_pattern, lowercase, binary = data["token_pattern"], data["lowercase"], data["binary"]
            ngram_range, vocabulary = data["ngram_range"], data["vocabulary"]
        except KeyError as err:
            raise ModelNotFound(f"featurizer data lacks the key {err}") from None
        if not isinstance(token_pattern, str) or not isinstance(lowercase, bool) or not isinstance(binary, bool):
            raise ModelNotFound("featurizer data: token_pattern must be a string, lowercase and binary booleans")
        if not isinstance(vocabulary, list) or not all(isinstance(t, str) for t in vocabulary):
            raise ModelNotFound("featurizer data: vocabulary must be a list of strings")
        if "vocab_size" in data and data["vocab_size"] != len(vocabulary):
            raise ModelNotFound(f"featurizer data: vocab_size {data['vocab_size']} != {len(vocabulary)} vocabulary entries")
        try:
            featurizer = cls(token_pattern=token_pattern, lowercase=lowercase, binary=binary)
            featurizer.ngram_range = _check_ngram_range(ngram_range)
        except ParamsError as err:
            raise ModelNotFound(f"featurizer data: {err}") from None
        featurizer.max_features = data.get("max_features")
        featurizer.min_df = data.get("min_df", 1)
        featurizer._set_vocabulary(vocabulary)
        return featurizer

    def save(self, path: str | Path) -> Path:
        """Write the featurizer as JSON (atomically)."""
        path = Path(path)
        write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: str | Path) -> "NgramFeaturizer":
        path = Path(path)
        if not path.is_file():
            raise ModelNotFound(f"featurizer file '{path}' does not exist")
        data = read_model_json(path, "a featurizer")
        try:
            return cls.from_dict(data)
        except ModelNotFound as err:
            raise ModelNotFound(f"featurizer file '{path}': {err}") from None


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------


class DANClassifier(nn.Module):
    """Mean of sparse n-gram embeddings -> dropout -> [Linear -> ReLU -> dropout] x len(hidden_dims) -> Linear.

    Embedding rows start at N(0, 0.1^2) (the padding row, if any, at zero).
    """

    EMBED_INIT_STD = 0.1

    def __init__(self, vocab_size: int, embed_dim: int, num_labels: int, hidden_dims: Sequence[int] = (256,),
                 dropout: float = 0.1, padding_idx: int | None = None):
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("embed_dim", embed_dim), ("num_labels", num_labels)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ParamsError(f"DANClassifier: {name} must be a positive integer, got {value!r}")
        hidden_dims = tuple(int(h) for h in hidden_dims)
        if any(h < 1 for h in hidden_dims):
            raise ParamsError(f"DANClassifier: hidden_dims must be positive, got {hidden_dims}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ParamsError(f"DANClassifier: dropout must be in [0, 1), got {dropout!r}")
        if padding_idx is not None and not 0 <= padding_idx < vocab_size:
            raise ParamsError(f"DANClassifier: padding_idx must be in [0, {vocab_size}), got {padding_idx!r}")
        self.vocab_size = int(vocab_size)
        self.embed_dim = int(embed_dim)
        self.num_labels = int(num_labels)
        self.hidden_dims = hidden_dims
        self.dropout_p = float(dropout)
        self.padding_idx = padding_idx

        self.embedding = nn.EmbeddingBag(self.vocab_size, self.embed_dim, mode="mean", sparse=True, padding_idx=padding_idx)
        layers: list[nn.Module] = [nn.Dropout(self.dropout_p)]
        width = self.embed_dim
        for h in hidden_dims:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(self.dropout_p)]
            width = h
        layers.append(nn.Linear(width, self.num_labels))
        self.head = nn.Sequential(*layers)
        self.reset_embedding()

    def reset_embedding(self) -> None:
        with torch.no_grad():
            self.embedding.weight.normal_(0.0, self.EMBED_INIT_STD)
            if self.padding_idx is not None:
                self.embedding.weight[self.padding_idx].zero_()

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(indices, offsets))

    def sparse_parameters(self) -> list[nn.Parameter]:
        """Parameters that receive sparse gradients (the embedding table)."""
        return [self.embedding.weight]

    def dense_parameters(self) -> list[nn.Parameter]:
        sparse = {id(p) for p in self.sparse_parameters()}
        return [p for p in self.parameters() if id(p) not in sparse]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def num_dense_parameters(self) -> int:
        return sum(p.numel() for p in self.dense_parameters())

    def active_parameters_per_example(self, n_ngrams: int) -> int:
        """Parameters one example touches: ``n_ngrams`` embedding rows (distinct; capped at the
        vocabulary size) times ``embed_dim``, plus every dense parameter."""
        if isinstance(n_ngrams, bool) or not isinstance(n_ngrams, (int, np.integer)) or n_ngrams < 0:
            raise ParamsError(f"n_ngrams must be a non-negative integer, got {n_ngrams!r}")
        return min(int(n_ngrams), self.vocab_size) * self.embed_dim + self.num_dense_parameters()

    def config(self) -> dict[str, Any]:
        return {
            "vocab_size": self.vocab_size, "embed_dim": self.embed_dim, "num_labels": self.num_labels,
            "hidden_dims": list(self.hidden_dims), "dropout": self.dropout_p, "padding_idx": self.padding_idx,
        }


def make_dan_optimizers(model: DANClassifier, lr_sparse: float, lr_dense: float,
                        weight_decay: float = 0.0) -> list[torch.optim.Optimizer]:
    """``[SparseAdam(embedding table), AdamW(everything else)]``.

    Call ``zero_grad`` / ``step`` on both. ``weight_decay`` applies to the dense parameters only
    (SparseAdam has none). Gradient clipping with ``clip_grad_norm_`` works on sparse grads too.
    """
    for name, lr in (("lr_sparse", lr_sparse), ("lr_dense", lr_dense)):
        if not float(lr) > 0:
            raise ParamsError(f"{name} must be > 0, got {lr!r}")
    if float(weight_decay) < 0:
        raise ParamsError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if not getattr(model.embedding, "sparse", False):
        raise ParamsError("make_dan_optimizers: the embedding must be created with sparse=True")
    sparse = torch.optim.SparseAdam(model.sparse_parameters(), lr=float(lr_sparse))
    dense = torch.optim.AdamW(model.dense_parameters(), lr=float(lr_dense), weight_decay=float(weight_decay))
    return [sparse, dense]


# --------------------------------------------------------------------------------------------------
# Student wrapper
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DANConfig:
    """Sizes of a DAN student. Paper scale: max_features=1_000_000, embed_dim=1000."""

    max_features: int = 200_000
    embed_dim: int = 64
    hidden_dims: tuple[int, ...] = (256,)
    dropout: float = 0.1
    ngram_range: tuple[int, int] = (1, 4)
    min_df: int | float = 1
    binary: bool = False


class DANStudent:
    """Featurizer + :class:`DANClassifier` + label names; inference needs only raw text."""

    def __init__(self, featurizer: NgramFeaturizer, model: DANClassifier, labels: Sequence[str]):
        labels = [str(label) for label in labels]
        if len(labels) != model.num_labels:
            raise ParamsError(f"DANStudent: {len(labels)} label names for a model with {model.num_labels} outputs")
        if featurizer.vocab_size != model.vocab_size:
            raise ParamsError(f"DANStudent: featurizer has {featurizer.vocab_size} n-grams, model {model.vocab_size} rows")
        self.featurizer = featurizer
        self.model = model
        self.labels = labels

    @classmethod
    def from_texts(cls, texts: Iterable[str], labels: Sequence[str], config: DANConfig | None = None,
                   seed: int | None = None) -> "DANStudent":
        """Fit the featurizer on ``texts`` (the transfer set) and build a freshly initialised model."""
        cfg = config or DANConfig()
        featurizer = NgramFeaturizer(binary=cfg.binary).fit(texts, cfg.max_features, cfg.ngram_range, cfg.min_df)
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            model = DANClassifier(featurizer.vocab_size, cfg.embed_dim, len(labels), cfg.hidden_dims, cfg.dropout)
        return cls(featurizer, model, labels)

    def featurize(self, texts: Sequence[str], device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        indices, offsets = self.featurizer.transform(texts)
        if device is not None:
            indices, offsets = indices.to(device), offsets.to(device)
        return indices, offsets

    def predict_logits(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """float32 logits ``[len(texts), num_labels]`` (eval mode; the training flag is restored)."""
        if isinstance(texts, str):
            raise DataError("texts must be a sequence of strings, not a single string")
        if batch_size < 1:
            raise ParamsError(f"batch_size must be >= 1, got {batch_size}")
        texts = list(texts)
        device = self.model.embedding.weight.device
        out = np.empty((len(texts), self.model.num_labels), dtype=np.float32)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for start in range(0, len(texts), batch_size):
                    indices, offsets = self.featurize(texts[start:start + batch_size], device)
                    out[start:start + len(offsets)] = self.model(indices, offsets).float().cpu().numpy()
        finally:
            self.model.train(was_training)
        return out

    def predict(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Predicted class indices."""
        return self.predict_logits(texts, batch_size).argmax(axis=1)

    def num_parameters(self) -> int:
        return self.model.num_parameters()

    # -- persistence -------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``featurizer.json``; replaces ``directory`` atomically."""
        from safetensors.torch import save_file

        directory = Path(directory)
        config = {"format": MODEL_FORMAT, "version": FORMAT_VERSION, **self.model.config(), "labels": list(self.labels)}
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        with atomic_dir(directory) as tmp:
            write_json(tmp / CONFIG_FILE, config)
            save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": MODEL_FORMAT})
            self.featurizer.save(tmp / FEATURIZER_FILE)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: torch.device | str = "cpu") -> "DANStudent":
        """Load a folder written by :meth:`save_pretrained` (model in eval mode).

        Raises ``ModelNotFound`` for a missing folder, a missing file, or unreadable / inconsistent contents.
        """
        from safetensors.torch import load_file

        directory = Path(directory)
        if not directory.is_dir():
            raise ModelNotFound(f"DAN student folder '{directory}' does not exist")
        for name in (CONFIG_FILE, WEIGHTS_FILE, FEATURIZER_FILE):
            if not (directory / name).is_file():
                raise ModelNotFound(f"DAN student folder '{directory}' has no {name} (not a saved DANStudent?)")
        config_path = directory / CONFIG_FILE
        config = read_model_json(config_path, "a DAN student config", fmt=MODEL_FORMAT, version=FORMAT_VERSION)
        try:
            labels = config["labels"]
            if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                raise TypeError("labels must be a list of strings")
            if not isinstance(config["hidden_dims"], list):
                raise TypeError("hidden_dims must be a list")
            model = DANClassifier(
                config["vocab_size"], config["embed_dim"], config["num_labels"], tuple(config["hidden_dims"]),
                config["dropout"], config["padding_idx"],
            )
        except KeyError as err:
            raise ModelNotFound(f"'{config_path}' lacks the key {err}") from None
        except (TypeError, ValueError, ParamsError) as err:
            raise ModelNotFound(f"'{config_path}' has invalid settings: {err}") from None

        featurizer = NgramFeaturizer.load(directory / FEATURIZER_FILE)
        weights_path = directory / WEIGHTS_FILE
        try:
            state = load_file(str(weights_path))
        except Exception as err:  # safetensors raises its own error types for truncated / foreign files
            raise ModelNotFound(f"'{weights_path}' could not be read: {err}") from None
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ModelNotFound(f"'{weights_path}' does not match '{config_path}': {err}") from None
        try:
            student = cls(featurizer, model, labels)
        except ParamsError as err:
            raise ModelNotFound(f"DAN student folder '{directory}' is inconsistent: {err}") from None
        model.to(device)
        model.eval()
        return student
