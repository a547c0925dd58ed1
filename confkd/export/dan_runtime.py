"""The sparse DAN at the limit: vectorised n-gram look-up and a plain numpy forward pass, no graph runtime.

A DAN's arithmetic is tiny (a gather of a few dozen embedding rows per text, then a small MLP), so at
inference most of the time used to go to what is *not* the model: a Python loop over n-grams, tensor
conversions and a graph runtime's per-call overhead. This module removes those:

* :class:`NgramTable` -- the saved vocabulary as a trie over integer token ids, looked up for a whole
  batch at once with numpy. Per text, Python only lower-cases, runs the token regex and maps tokens to
  ids (C-level ``map``); n-grams of every order are then found by ``searchsorted`` on sorted integer
  keys ``parent_ngram_id * n_tokens + token_id``. For a prefix-closed vocabulary (what
  ``NgramFeaturizer.fit`` chooses) the bag of each text is the same multiset of ids as
  ``NgramFeaturizer.transform``; only the order inside a bag differs, which moves an embedding mean by
  float rounding (<= 1e-6).
* :class:`NumpyDANPredictor` -- an exported DAN folder (``models/export/<name>``) run with numpy:
  ``W[ids]`` summed per text (``np.add.reduceat``), divided by the bag size (``EmbeddingBag`` mean;
  an empty bag gives zeros), then ``[Linear -> ReLU]* -> Linear``. The weights are read from the
  export's own fp32 ONNX graph, so the folder stays the single deployable artefact. With numba
  installed (the default), the look-up and the bag means are one compiled pass instead
  (:mod:`confkd.export.dan_kernel`), with the same bags; ``benchmarks/bench_dan_runtime.py`` measures
  the two paths against each other.

Arithmetic per batch of ``B`` texts with ``m`` n-grams each (see :func:`dan_flops`): ``B*m*d`` adds for
the bag sums and ``2*B*sum(in*out)`` for the MLP -- the physical floor the benchmark compares with.

Neither class imports PyTorch: a process serving the DAN needs numpy, numba (optional), the regex
module and (to read the weights) ``onnx``. Serve it with numpy's BLAS single-threaded
(``OPENBLAS_NUM_THREADS=1``, or ``threadpoolctl.threadpool_limits(1, "blas")``): the MLP's matmuls are a few MFLOP, where a second
thread costs more than it saves, and spin-waiting BLAS threads collapse on a shared machine.
"""

from __future__ import annotations

import json
import logging
import re
from functools import lru_cache
from itertools import chain, repeat
from pathlib import Path
from typing import Sequence

import numpy as np

from confkd.errors import DataError, ModelNotFound
from confkd.predictors import Predictor, _check_texts

FEATURIZER_FORMAT = "confkd-ngram-featurizer"
# Up to this many tokens in a batch, n-grams are found by a Python walk over integer keys; above, with numpy.
SMALL_BATCH_TOKENS = 256  # as written by confkd.models.dan.NgramFeaturizer.save
# Token patterns whose tokens never contain a space, so a vocabulary n-gram splits back into its tokens.
WHITESPACE_FREE_PATTERNS = frozenset({r"(?u)\b\w+\b", r"(?u)\b\w\w+\b", r"\b\w+\b", r"\b\w\w+\b", r"\w+"})


class UnservableVocabulary(ModelNotFound):
    """A valid featurizer whose vocabulary the vectorised look-up cannot serve (use ``NgramFeaturizer``)."""


class NgramTable:
    """A prefix-closed n-gram vocabulary, looked up for a batch of texts with numpy.

    ``vocabulary[i]`` is the n-gram of embedding row ``i`` (tokens joined by one space). Raises
    ``ModelNotFound`` when the vocabulary cannot be served this way (not prefix-closed, n-grams not
    starting at 1, or a token pattern that may produce tokens with spaces) -- :class:`UnservableVocabulary`,
    upon which the caller keeps ``NgramFeaturizer.transform``.
    """

    def __init__(self, vocabulary: Sequence[str], token_pattern: str, lowercase: bool = True,
                 binary: bool = False, ngram_range: Sequence[int] = (1, 4)):
        lo, hi = (int(n) for n in ngram_range)
        if lo != 1:
            raise UnservableVocabulary(f"NgramTable needs n-grams from 1, got ngram_range {tuple(ngram_range)}")
        if token_pattern not in WHITESPACE_FREE_PATTERNS:
            raise UnservableVocabulary(f"NgramTable: token pattern {token_pattern!r} is not one whose tokens are space-free")
        self.findall = re.compile(token_pattern).findall
        self.lowercase, self.binary, self.max_n = bool(lowercase), bool(binary), hi
        self.vocab_size = len(vocabulary)
        split = [gram.split(" ") for gram in vocabulary]
        tokens = sorted({t for parts in split for t in parts})
        self.token_id = {t: i for i, t in enumerate(tokens)}
        self.n_tokens = n_tok = len(tokens)
        self.unknown = n_tok  # id of a token outside the vocabulary's n-grams
        gram_id = {gram: i for i, gram in enumerate(vocabulary)}
        if len(gram_id) != len(vocabulary):
            raise ModelNotFound("NgramTable: the vocabulary has duplicate entries")
        self.unigram = np.full(n_tok + 1, -1, dtype=np.int64)  # token id -> row, -1 when not a unigram of its own
        keys: list[list[int]] = [[] for _ in range(hi + 1)]
        rows: list[list[int]] = [[] for _ in range(hi + 1)]
        for row, parts in enumerate(split):
            n = len(parts)
            if n > hi:
                raise UnservableVocabulary(f"NgramTable: vocabulary entry {vocabulary[row]!r} is longer than {hi} tokens")
            if n == 1:
                self.unigram[self.token_id[parts[0]]] = row
                continue
            parent = gram_id.get(" ".join(parts[:-1]))
            if parent is None:
                raise UnservableVocabulary(f"NgramTable: the vocabulary is not prefix-closed ('{vocabulary[row]}' "
                                    "is in it, its prefix is not)")
            keys[n].append(parent * (n_tok + 1) + self.token_id[parts[-1]])
            rows[n].append(row)
        self._child: dict[int, int] | None = None
        self._hash: np.ndarray | None = None
        self.keys, self.rows = [], []
        for n in range(hi + 1):
            k = np.asarray(keys[n], dtype=np.int64)
            order = np.argsort(k, kind="stable")
            self.keys.append(k[order])
            self.rows.append(np.asarray(rows[n], dtype=np.int64)[order])

    @classmethod
    def from_featurizer(cls, featurizer) -> "NgramTable":
        """From a fitted ``confkd.models.dan.NgramFeaturizer``."""
        return cls(featurizer.vocabulary, featurizer.token_pattern, featurizer.lowercase, featurizer.binary,
                   featurizer.ngram_range)

    @classmethod
    def from_featurizer_file(cls, path: str | Path) -> "NgramTable":
        """Read a saved featurizer (``featurizer.json``) without importing PyTorch."""
        path = Path(path)
        if not path.is_file():
            raise ModelNotFound(f"featurizer file '{path}' does not exist")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ModelNotFound(f"featurizer file '{path}' is corrupted: {err}") from None
        if not isinstance(data, dict) or data.get("format") != FEATURIZER_FORMAT:
            raise ModelNotFound(f"featurizer file '{path}' is not an n-gram featurizer (format "
                                f"{data.get('format') if isinstance(data, dict) else None!r})")
        try:
            return cls(data["vocabulary"], data["token_pattern"], data["lowercase"], data["binary"], data["ngram_range"])
        except UnservableVocabulary:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, re.error) as err:
            raise ModelNotFound(f"featurizer file '{path}': invalid content ({err!r})") from None

    def _words(self, texts: Sequence[str]) -> list[list[str]]:
        """Each text's tokens (the training tokenizer's regex, lower-cased when it was)."""
        findall = self.findall
        try:
            return [findall(t.lower()) for t in texts] if self.lowercase else [findall(t) for t in texts]
        except (AttributeError, TypeError):
            bad = next(i for i, t in enumerate(texts) if not isinstance(t, str))
            raise DataError(f"text #{bad} is {type(texts[bad]).__name__}, not str") from None

    def token_lists(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (unknown tokens as ``self.unknown``)."""
        get, unknown = self.token_id.get, repeat(self.unknown)
        return [list(map(get, words, unknown)) for words in self._words(texts)]

    def tokens(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(token ids [N], tokens per text [B])`` of the whole batch, unknown tokens as ``self.unknown``.

        The ids of all texts are mapped in one C-level pass (no list per text)."""
        words = self._words(texts)
        lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))
        ids = np.fromiter(map(self.token_id.get, chain.from_iterable(words), repeat(self.unknown)),
                          dtype=np.int64, count=int(lengths.sum()))
        return ids, lengths

    def hash_table(self) -> np.ndarray:
        """The n-grams of order >= 2 as :func:`confkd.export.dan_kernel.build_hash` slots (built once)."""
        if self._hash is None:
            from confkd.export.dan_kernel import build_hash

            keys = np.concatenate(self.keys[2:] or [np.zeros(0, dtype=np.int64)])
            rows = np.concatenate(self.rows[2:] or [np.zeros(0, dtype=np.int64)])
            bits = max(4, int(np.ceil(np.log2(max(1, 2 * len(keys))))))  # at most half full
            self._hash = build_hash(keys, rows, bits)
        return self._hash

    def compiled_bag_means(self, embedding: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """``[len(texts), d]``: :func:`bag_means` of :meth:`lookup`'s bags, found and summed in one compiled
        pass (:func:`confkd.export.dan_kernel.bag_means`); needs numba."""
        from confkd.export import dan_kernel

        ids, lengths = self.tokens(texts)
        return dan_kernel.bag_means(ids, lengths, self.unigram, self.n_tokens + 1, self.hash_table(), self.max_n,
                                    embedding, self.binary)

    @staticmethod
    def _flatten(per_text: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        lengths = np.fromiter(map(len, per_text), dtype=np.int64, count=len(per_text))
        ids = np.fromiter(chain.from_iterable(per_text), dtype=np.int64, count=int(lengths.sum()))
        return ids, lengths

    def lookup(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(rows [M], text index [M])``: every vocabulary n-gram occurrence of every text.

        A batch of at most :data:`SMALL_BATCH_TOKENS` tokens is walked in Python (a handful of integer dict
        look-ups per token beats numpy's per-call overhead there); larger batches are looked up with numpy,
        one ``searchsorted`` per n-gram order. Both give the same bags; the order inside a bag is not
        ``NgramFeaturizer.transform``'s. With ``binary`` each distinct row appears once per text.
        """
        per_text = self.token_lists(texts)
        if sum(map(len, per_text)) <= SMALL_BATCH_TOKENS:
            rows, owner = self._walk(per_text)
        else:
            rows, owner = self._vectorised(*self._flatten(per_text))
        if self.binary:
            pairs = np.unique(owner * self.vocab_size + rows)
            rows, owner = pairs % self.vocab_size, pairs // self.vocab_size
        return rows, owner

    def _walk(self, per_text: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Per token: its unigram row, then extend one token at a time while the longer n-gram is known."""
        if self._child is None:  # built on first use: {parent_row * n_keys + token: row}
            width = self.n_tokens + 1
            self._child = {int(k): int(r) for n in range(2, self.max_n + 1)
                           for k, r in zip(self.keys[n].tolist(), self.rows[n].tolist())}
            self._unigram_list = self.unigram.tolist()
            self._width = width
        child, unigram, width, span = self._child.get, self._unigram_list, self._width, self.max_n
        rows: list[int] = []
        owner: list[int] = []
        add_row, add_owner = rows.append, owner.append
        for i, toks in enumerate(per_text):
            for k, token in enumerate(toks):
                row = unigram[token]
                if row < 0:
                    continue  # no longer n-gram starting here can be in the vocabulary
                add_row(row)
                add_owner(i)
                for nxt in toks[k + 1:k + span]:
                    row = child(row * width + nxt)
                    if row is None:
                        break
                    add_row(row)
                    add_owner(i)
        return np.array(rows, dtype=np.int64), np.array(owner, dtype=np.int64)

    def _vectorised(self, tok: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        text = np.repeat(np.arange(len(lengths)), lengths)
        cur = self.unigram[tok]  # row of the n-gram of the current order starting at each position
        found_rows, found_text = [cur[cur >= 0]], [text[cur >= 0]]
        width = self.n_tokens + 1
        for n in range(2, self.max_n + 1):
            if len(cur) < 2 or len(self.keys[n]) == 0:
                break
            nxt = tok[n - 1:]
            cur = cur[:-1]
            ok = (cur >= 0) & (text[:len(cur)] == text[n - 1:]) & (nxt != self.unknown)
            key = cur[ok] * width + nxt[ok]
            pos = np.minimum(np.searchsorted(self.keys[n], key), len(self.keys[n]) - 1)
            hit = self.keys[n][pos] == key
            cur = np.full(len(cur), -1, dtype=np.int64)
            where = np.flatnonzero(ok)[hit]
            cur[where] = self.rows[n][pos[hit]]
            found_rows.append(cur[where])
            found_text.append(text[where])
        return np.concatenate(found_rows), np.concatenate(found_text)

    def padded(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The exported DAN graph's inputs: ``ngram_ids`` [B, L] int64 and ``ngram_mask`` [B, L] float32."""
        rows, owner = self.lookup(texts)
        order = np.argsort(owner, kind="stable")
        counts = np.bincount(owner, minlength=len(texts))
        return pad_bags(rows[order], np.cumsum(counts) - counts)


def pad_bags(indices: np.ndarray, offsets: np.ndarray) -> dict[str, np.ndarray]:
    """EmbeddingBag-style ``(indices, offsets)`` -> ``{"ngram_ids": [B, L], "ngram_mask": [B, L]}``.

    Rows keep each bag's ids in order, so the masked mean equals ``EmbeddingBag(mode="mean")`` up to
    float rounding; padding slots hold id 0 with mask 0.
    """
    n = len(offsets)
    lengths = np.diff(np.append(offsets, len(indices)))
    width = max(1, int(lengths.max()) if n else 1)
    mask = np.arange(width)[None, :] < lengths[:, None]
    ids = np.zeros((n, width), dtype=np.int64)
    ids[mask] = indices
    return {"ngram_ids": ids, "ngram_mask": mask.astype(np.float32)}


def bag_means(embedding: np.ndarray, rows: np.ndarray, owner: np.ndarray, n_texts: int) -> np.ndarray:
    """``[n_texts, d]``: the mean embedding of each text's rows (zeros for an empty bag), = ``EmbeddingBag(mode="mean")``.

    ``rows`` and ``owner`` ([M] each) as :meth:`NgramTable.lookup` returns them.
    """
    if n_texts == 1 and len(rows):  # the batch-1 path: np.mean's own result, without its Python wrapper
        return np.add.reduce(embedding[rows], axis=0, keepdims=True) / embedding.dtype.type(len(rows))
    out = np.zeros((n_texts, embedding.shape[1]), dtype=embedding.dtype)
    if len(rows) == 0:
        return out
    order = np.argsort(owner, kind="stable")
    owner = owner[order]
    counts = np.bincount(owner, minlength=n_texts)
    nonempty = np.flatnonzero(counts)
    starts = (np.cumsum(counts) - counts)[nonempty]
    out[nonempty] = np.add.reduceat(embedding[rows[order]], starts, axis=0) / counts[nonempty, None].astype(embedding.dtype)
    return out


def read_dan_graph(path: str | Path) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """``(embedding [V, d], [(weight [in, out], bias [out]), ...])`` from an exported fp32 DAN graph.

    The graph is the one ``confkd.export.convert.export_dan_onnx`` writes: a ``Gather`` on the
    embedding table, a masked mean, then ``Gemm`` layers with ``Relu`` between them. Anything else
    raises ``ModelNotFound``.
    """
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    if not path.is_file():
        raise ModelNotFound(f"ONNX model file '{path}' does not exist")
    try:
        graph = onnx.load(str(path)).graph
    except Exception as err:  # onnx raises DecodeError and friends for broken files
        raise ModelNotFound(f"ONNX model file '{path}' could not be read: {err}") from None
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    gathers = [n for n in graph.node if n.op_type == "Gather" and n.input[0] in weights]
    gemms = [n for n in graph.node if n.op_type in ("Gemm", "MatMul")]
    ops = [n.op_type for n in graph.node if n.op_type in ("Gemm", "Relu")]
    expected = ["Gemm"] + ["Relu", "Gemm"] * (len(gemms) - 1)
    if len(gathers) != 1 or not gemms or ops != expected or any(n.op_type != "Gemm" for n in gemms):
        raise ModelNotFound(f"'{path}' is not a DAN graph this runtime reads (ops {ops})")
    layers = []
    for node in gemms:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            raise ModelNotFound(f"'{path}': Gemm {node.name} has settings this runtime does not read ({attrs})")
        w = weights[node.input[1]]
        w = w.T if attrs.get("transB", 0) else w
        layers.append((np.ascontiguousarray(w, dtype=np.float32), weights[node.input[2]].astype(np.float32)))
    embedding = np.ascontiguousarray(weights[gathers[0].input[0]], dtype=np.float32)
    return embedding, layers


def dan_flops(n_ngrams: int, embed_dim: int, layer_shapes: Sequence[tuple[int, int]], batch_size: int) -> int:
    """Floating-point operations of one DAN forward pass over a batch: bag sums + MLP (2 per multiply-add)."""
    return int(batch_size * (n_ngrams * embed_dim + 2 * sum(i * o for i, o in layer_shapes)))


class NumpyDANPredictor(Predictor):
    """An exported DAN folder served with :class:`NgramTable` and numpy (fp32; no ONNX Runtime, no PyTorch)."""

    runtime = "numpy"

    def __init__(self, path: str | Path, compiled: bool | None = None):
        """``compiled``: find and sum the bags with :mod:`confkd.export.dan_kernel` (numba); ``None``: when
        numba is installed. ``self.kernel`` says which path serves (``"numba"`` or ``"numpy"``)."""
        from confkd.export.manifest import FEATURIZER_FILE, read_manifest

        if compiled is None:
            compiled = numba_available()
        elif compiled and not numba_available():
            raise ModelNotFound("the compiled DAN kernel needs numba (pip install numba), or pass compiled=False")
        self.kernel = "numba" if compiled else "numpy"

        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        if self.manifest["kind"] != "dan":
            raise ModelNotFound(f"'{self.path}' holds a {self.manifest['kind']!r} export; the numpy runtime serves DANs only")
        self.labels = list(self.manifest["labels"])
        self.table = NgramTable.from_featurizer_file(self.path / self.manifest["files"].get("featurizer", FEATURIZER_FILE))
        self.embedding, self.layers = read_dan_graph(self.path / self.manifest["files"]["fp32"])
        if self.embedding.shape[0] != self.table.vocab_size:
            raise ModelNotFound(f"'{self.path}': {self.embedding.shape[0]} embedding rows for a vocabulary of {self.table.vocab_size}")
        if self.layers[-1][1].shape[0] != len(self.labels):
            raise ModelNotFound(f"'{self.path}': the graph has {self.layers[-1][1].shape[0]} outputs for {len(self.labels)} labels")

    def predict_logits(self, texts: Sequence[str]) -> np.ndarray:
        """``[len(texts), num_labels]`` float32 logits."""
        texts = _check_texts(texts)
        if self.kernel == "numba":
            x = self.table.compiled_bag_means(self.embedding, texts)
        else:
            rows, owner = self.table.lookup(texts)
            x = bag_means(self.embedding, rows, owner, len(texts))
        return self.mlp(x)

    def mlp(self, x: np.ndarray) -> np.ndarray:
        """The feed-forward layers on ``[B, d]`` bag means (ReLU between them): ``[B, num_labels]`` logits.
        ``x`` itself is left unchanged."""
        last = len(self.layers) - 1
        for i, (w, b) in enumerate(self.layers):
            x = x @ w
            x += b
            if i < last:
                np.maximum(x, 0.0, out=x)
        return x

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """``[len(texts), num_labels]`` float32 probabilities: the softmax in place in float32 (the shared path's
        float64 round trip costs more than the model at batch 1); within 1e-6 of it."""
        x = self.predict_logits(texts)
        x -= x.max(axis=1, keepdims=True)
        np.exp(x, out=x)
        x /= x.sum(axis=1, keepdims=True)
        return x

    def __repr__(self) -> str:
        return f"NumpyDANPredictor({str(self.path)!r}, kernel={self.kernel!r})"


@lru_cache(maxsize=1)
def numba_available() -> bool:
    """Whether the compiled bag kernel can be used: numba installed and :mod:`confkd.export.dan_kernel`
    importable (numba refuses to load a module whose on-disk cache it cannot place anywhere)."""
    import importlib.util

    if importlib.util.find_spec("numba") is None:
        return False
    try:
        import confkd.export.dan_kernel  # noqa: F401
    except Exception as err:  # numba raises its own errors (e.g. no cache locator) at decoration time
        logging.getLogger(__name__).warning("numba is installed but the compiled DAN kernel failed to load "
                                            "(%s); the numpy path serves", err)
        return False
    return True
