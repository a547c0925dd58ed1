import logging
import re

import pytest

from confkd.config import LossTerm, MatchParams, parse_params
from confkd.distill.mapping import Match, build_matches, layer_map, validate_matches
from confkd.errors import ParamsError


@pytest.mark.parametrize("scheme,n,m,expected", [
    ("uniform", 12, 4, [3, 6, 9, 12]),
    ("uniform", 6, 4, [2, 3, 5, 6]),      # ceil(1.5), ceil(3), ceil(4.5), ceil(6)
    ("uniform", 6, 5, [2, 3, 4, 5, 6]),   # ceil(1.2), ceil(2.4), ceil(3.6), ceil(4.8), 6
    ("uniform", 7, 3, [3, 5, 7]),         # ceil(7/3), ceil(14/3), 7
    ("uniform", 12, 5, [3, 5, 8, 10, 12]),  # ceil(2.4), ceil(4.8), ceil(7.2), ceil(9.6), 12
    ("uniform", 6, 3, [2, 4, 6]),
    ("uniform", 12, 1, [12]),
    ("first", 12, 4, [1, 2, 3, 4]),
    ("first", 7, 3, [1, 2, 3]),
    ("last", 12, 4, [9, 10, 11, 12]),
    ("last", 7, 3, [5, 6, 7]),
    ("last", 6, 1, [6]),
    ("skip", 6, 3, [1, 3, 5]),
    ("skip", 12, 4, [1, 4, 7, 10]),
    ("skip", 7, 3, [1, 4, 7]),            # s = 6 // 2 = 3
    ("skip", 12, 5, [1, 3, 5, 7, 9]),     # s = 11 // 4 = 2
    ("skip", 6, 4, [1, 2, 3, 4]),         # s = 5 // 3 = 1
    ("skip", 6, 1, [1]),
])
def test_layer_map_schemes(scheme, n, m, expected):
    assert layer_map(scheme, n, m) == expected


@pytest.mark.parametrize("n", [1, 4, 6])
def test_equal_depth_is_identity(n):
    identity = list(range(1, n + 1))
    for scheme in ("uniform", "first", "last", "skip"):
        assert layer_map(scheme, n, n) == identity, scheme


def test_custom_map_and_non_monotonic_warning(caplog):
    assert layer_map("custom", 6, 3, [2, 4, 6]) == [2, 4, 6]
    assert layer_map("custom", 6, 3, [6, 6, 6]) == [6, 6, 6]
    assert layer_map("custom", 2, 4, [1, 1, 2, 2]) == [1, 1, 2, 2]  # more student layers is fine with custom
    with caplog.at_level(logging.WARNING, logger="confkd.distill.mapping"):
        assert layer_map("custom", 6, 3, [4, 2, 6]) == [4, 2, 6]
    assert "not monotonic" in caplog.text


@pytest.mark.parametrize("args,pattern", [
    (("middle", 12, 4), "unknown layer mapping scheme 'middle'"),
    (("uniform", 4, 6), r"'uniform'.*more layers \(6\) than the teacher \(4\)"),
    (("first", 4, 6), "'first'.*more layers"),
    (("last", 4, 6), "'last'.*more layers"),
    (("skip", 4, 6), "'skip'.*more layers"),
    (("uniform", 6, 0), "student layer count must be an integer >= 1, got 0"),
    (("skip", 0, 1), "teacher layer count"),
    (("custom", 6, 3), "'custom' needs a list"),
    (("custom", 6, 3, [2, 4]), r"got 2 teacher layers \[2, 4\] for a 3-layer student"),
    (("custom", 6, 3, [0, 3, 6]), r"teacher layers \[0\] out of range 1..6"),
    (("custom", 6, 3, [2, 4, 7]), r"teacher layers \[7\] out of range 1..6"),
    (("uniform", 6, 3, [2, 4, 6]), "does not take a custom list"),
])
def test_layer_map_errors(args, pattern):
    with pytest.raises(ParamsError, match=pattern):
        layer_map(*args)


FEATURES = {
    "attention": LossTerm(loss="attention_mse", weight=1.0),
    "hidden": LossTerm(loss="hidden_mse", weight=0.5),
    "embedding": LossTerm(loss="embedding_mse", weight=2.0),
}


def test_build_matches_uniform_6_to_3():
    matches = build_matches("uniform", 6, 3, FEATURES)
    assert len(matches) == 1 + 3 * 2
    assert matches == [
        Match(0, 0, "embedding", "embedding_mse", 2.0, True),
        Match(2, 1, "attention", "attention_mse", 1.0, False),
        Match(2, 1, "hidden", "hidden_mse", 0.5, True),
        Match(4, 2, "attention", "attention_mse", 1.0, False),
        Match(4, 2, "hidden", "hidden_mse", 0.5, True),
        Match(6, 3, "attention", "attention_mse", 1.0, False),
        Match(6, 3, "hidden", "hidden_mse", 0.5, True),
    ]


def test_build_matches_cls_defaults_and_extra():
    matches = build_matches(
        "skip", 6, 3, {"cls": LossTerm(loss="cls_cosine"), "hidden": LossTerm(loss="hidden_mse")},
        extra=[MatchParams(teacher_layer=3, student_layer=2, feature="attention", loss="attention_kl", weight=0.3),
               MatchParams(teacher_layer=0, student_layer=1, feature="hidden", loss="hidden_cosine", projection=False)],
    )
    assert [m for m in matches if m.feature == "cls"] == [
        Match(1, 1, "cls", "cls_cosine"), Match(3, 2, "cls", "cls_cosine"), Match(5, 3, "cls", "cls_cosine")]
    assert [m for m in matches if m.feature == "hidden"][:3] == [
        Match(1, 1, "hidden", "hidden_mse"), Match(3, 2, "hidden", "hidden_mse"), Match(5, 3, "hidden", "hidden_mse")]
    assert matches[-2:] == [Match(3, 2, "attention", "attention_kl", 0.3, False),
                            Match(0, 1, "hidden", "hidden_cosine", 1.0, False)]
    assert len(matches) == 8


def test_build_matches_custom_scheme_and_bad_inputs():
    matches = build_matches("custom", 6, 2, {"attention": LossTerm(loss="attention_mse")}, custom=[3, 6])
    assert [(m.teacher_layer, m.student_layer) for m in matches] == [(3, 1), (6, 2)]
    with pytest.raises(ParamsError, match="unknown distillation features"):
        build_matches("uniform", 6, 3, {"logits": LossTerm(loss="hidden_mse")})
    with pytest.raises(ParamsError, match="cannot be used for feature 'attention'"):
        build_matches("uniform", 6, 3, {"attention": LossTerm(loss="hidden_mse")})


@pytest.mark.parametrize("intermediate, needle", [
    ({"hidden": {"los": "hidden_mse"}}, "intermediate.hidden.los"),            # a misspelt key
    ({"matches": [{"teacher_layer": 1, "student_layer": 1, "feature": "hidden"}]}, "intermediate.matches.0.loss"),
    ({"hidden": {"loss": "hidden_mse", "weight": -1}}, "intermediate.hidden.weight"),
])
def test_bad_loss_terms_are_caught_when_params_are_parsed(intermediate, needle):
    """Loss terms are parsed once, by the schema: a malformed one fails there, naming the key."""
    raw = {"distill": {"configs": {"x": {"method": "tinybert", "intermediate": intermediate}}}}
    with pytest.raises(ParamsError, match=re.escape(needle)):
        parse_params(raw)


@pytest.mark.parametrize("match,pattern", [
    (Match(7, 1, "hidden", "hidden_mse"), "teacher has no layer 7; valid 0..6"),
    (Match(1, 4, "hidden", "hidden_mse"), "student has no layer 4; valid 0..3"),
    (Match(0, 1, "attention", "attention_mse"), "teacher has no layer 0; valid 1..6.*no attention"),
    (Match(1, 0, "attention", "attention_mse"), "student has no layer 0; valid 1..3"),
    (Match(7, 3, "cls", "cls_mse"), "teacher has no layer 7"),
    (Match(1, 1, "embedding", "embedding_mse"), "embedding match must use layer 0"),
    (Match(2, 1, "hidden", "hidden_l2"), r"unknown loss 'hidden_l2' \(available:"),
    (Match(2, 1, "attention", "hidden_mse"), "cannot be used for feature 'attention'"),
    (Match(2, 1, "hidden", "kl"), "cannot be used for feature 'hidden'"),
    (Match(2, 1, "hidden", "hidden_mse", weight=-0.5), "weight must be a finite number >= 0"),
    (Match(2, 1, "logits", "kl"), "unknown feature 'logits'"),
])
def test_validate_matches_errors(match, pattern):
    with pytest.raises(ParamsError, match=pattern):
        validate_matches([Match(0, 0, "embedding", "embedding_mse"), match], 6, 3)


def test_validate_matches_accepts_valid_edges():
    validate_matches([
        Match(0, 0, "embedding", "hidden_cosine"), Match(6, 3, "attention", "attention_kl"),
        Match(0, 0, "hidden", "hidden_mse"), Match(6, 3, "cls", "cls_mse", weight=0.0),
    ], 6, 3)
