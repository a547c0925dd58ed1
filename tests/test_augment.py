from confkd.data.augment import augment_texts
from confkd.data.leakage import LeakIndex
from confkd.data.text import normalize_text

SOURCES = ["a gorgeous , witty , seductive movie", "an uneven , dull mess of a film", "i loved every minute of it",
           "the plot is thin but the acting is superb", "ok"]


def test_augmentation_is_deterministic_distinct_and_traceable():
    a, origin_a, stats = augment_texts(SOURCES, 40, seed=3, exclude={normalize_text(s) for s in SOURCES})
    b, origin_b, _ = augment_texts(SOURCES, 40, seed=3, exclude={normalize_text(s) for s in SOURCES})
    assert a == b and origin_a == origin_b
    assert len(a) == 40 and len({normalize_text(t) for t in a}) == 40
    assert not {normalize_text(t) for t in a} & {normalize_text(s) for s in SOURCES}
    assert 4 not in origin_a  # "ok" has fewer than min_words words and is never a source
    assert stats["sources"] == 4
    c, _, _ = augment_texts(SOURCES, 40, seed=4)
    assert c != a


def test_masking_substitution_and_ngram_sampling():
    only_mask, _, _ = augment_texts(SOURCES, 20, seed=0, p_mask=1.0, p_substitute=0.0, p_ngram=0.0)
    assert all(set(t.split()) == {"[MASK]"} for t in only_mask)
    ngrams, origin, _ = augment_texts(SOURCES, 30, seed=0, p_mask=0.0, p_substitute=0.0, p_ngram=1.0, ngram_max=2)
    for text, src in zip(ngrams, origin):
        assert 1 <= len(text.split()) <= 2 and f" {text} " in f" {SOURCES[src]} "
    vocab = {w for s in SOURCES[:4] for w in s.split()}
    subs, _, _ = augment_texts(SOURCES, 30, seed=0, p_mask=0.0, p_substitute=0.5, p_ngram=0.0)
    assert all(set(t.split()) <= vocab for t in subs)


def test_leaking_texts_are_rejected():
    test_sentence = "the plot is thin but the acting is superb"
    index = LeakIndex([test_sentence], word_run=8)
    out, origin, stats = augment_texts(SOURCES, 25, seed=1, leak_index=index, p_mask=0.05, p_substitute=0.05)
    assert all(index.reason(t) is None for t in out)
    assert stats["leaks"] > 0


def test_size_zero_and_no_sources():
    assert augment_texts(SOURCES, 0, seed=0)[0] == []
    assert augment_texts(["a b"], 5, seed=0, min_words=3)[0] == []
