"""Find unlabeled lines that leak evaluation examples into a transfer set.

Exact matching is not enough: SST-2's test sentences occur inside longer review snippets of the
unlabeled movie-review pool (the same source). A line is a leak when, after normalisation, it

* equals an eval text (``exact``),
* contains a whole eval text of at least ``min_words`` words (``contains_eval``),
* shares a run of ``word_run`` consecutive words with an eval text (``shared_word_run``), or
* has ``min_words``..``word_run-1`` words and is contained in an eval text (``contained_in_eval``).
"""

from __future__ import annotations

from confkd.data.text import word_tokens

REASONS = ("exact", "contains_eval", "shared_word_run", "contained_in_eval")


class LeakIndex:
    def __init__(self, eval_texts: list[str], word_run: int = 8, min_words: int = 4):
        self.word_run = word_run
        self.min_words = min_words
        self.exact: set[tuple[str, ...]] = set()
        self.short_eval: set[tuple[str, ...]] = set()  # whole eval texts of min_words..word_run-1 words
        self.runs: set[tuple[str, ...]] = set()  # every word_run-gram of every eval text
        self.sub: set[tuple[str, ...]] = set()  # every min_words..word_run-1 gram of eval texts
        for text in eval_texts:
            t = word_tokens(text)
            if not t:
                continue
            self.exact.add(t)
            if min_words <= len(t) < word_run:
                self.short_eval.add(t)
            for i in range(len(t) - word_run + 1):
                self.runs.add(t[i : i + word_run])
            for n in range(min_words, word_run):
                for i in range(len(t) - n + 1):
                    self.sub.add(t[i : i + n])

    def reason(self, text: str) -> str | None:
        """The first leak reason that applies to ``text``, or None if it is clean."""
        t = word_tokens(text)
        if t in self.exact:
            return "exact"
        n_tok = len(t)
        if self.short_eval:
            for n in range(self.min_words, min(self.word_run, n_tok + 1)):
                for i in range(n_tok - n + 1):
                    if t[i : i + n] in self.short_eval:
                        return "contains_eval"
        for i in range(n_tok - self.word_run + 1):
            if t[i : i + self.word_run] in self.runs:
                return "shared_word_run"
        if self.min_words <= n_tok < self.word_run and t in self.sub:
            return "contained_in_eval"
        return None
