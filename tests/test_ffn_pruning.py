"""Students copied from teacher layers with narrower feed-forward blocks (structured pruning of the intermediate
dimension by weight magnitude): which neurons are kept, what the pruned layer computes, and that the student
saves and reloads like any other."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from confkd.config import StudentParams
from confkd.distill.students import (build_transformer_student, feed_forward_pair, ffn_importance, ffn_width,
                                     prune_feed_forward)
from confkd.errors import ParamsError


def _bert(intermediate: int = 16, hidden: int = 8, layers: int = 2, seed: int = 0):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=50, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=intermediate, max_position_embeddings=16, num_labels=2)
    return BertForSequenceClassification(cfg).eval()


def test_importance_is_the_product_of_the_read_and_write_norms():
    up, down = nn.Linear(2, 3), nn.Linear(3, 2)
    with torch.no_grad():
        up.weight.copy_(torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]]))  # row norms 5, 1, 2
        down.weight.copy_(torch.tensor([[1.0, 0.0, 6.0], [0.0, 2.0, 8.0]]))  # column norms 1, 2, 10
    assert ffn_importance(up, down).tolist() == [5.0, 2.0, 20.0]


def test_pruning_keeps_the_largest_neurons_in_order_and_computes_their_sum():
    model = _bert(intermediate=8, hidden=4)
    layer = model.bert.encoder.layer[0]
    up, down = feed_forward_pair(layer, 8, 4)
    with torch.no_grad():
        for j, scale in enumerate([1.0, 9.0, 2.0, 8.0, 3.0, 7.0, 0.5, 6.0]):  # neurons 1, 3, 5, 7 are the largest
            up.weight[j] = up.weight[j] / up.weight[j].norm() * scale
    full_up_w, full_up_b, full_down_w = up.weight.clone(), up.bias.clone(), down.weight.clone()
    x = torch.randn(3, 4)
    keep = [1, 3, 5, 7]
    act = model.config.hidden_act
    from transformers.activations import ACT2FN

    expected = (ACT2FN[act](x @ full_up_w[keep].T + full_up_b[keep])) @ full_down_w[:, keep].T + down.bias
    kept = prune_feed_forward(model, 4)
    assert kept[0] == keep
    assert up.weight.shape == (4, 4) and down.weight.shape == (4, 4) and up.out_features == 4 == down.in_features
    torch.testing.assert_close(down(ACT2FN[act](up(x))), expected)
    assert model.config.intermediate_size == 4 and ffn_width(model) == 4


def test_the_teachers_width_leaves_the_student_unchanged():
    teacher = _bert()
    plain = build_transformer_student(teacher, StudentParams(num_layers=1, init_scheme="last"))
    full = build_transformer_student(teacher, StudentParams(num_layers=1, init_scheme="last", intermediate_size=16))
    ids = torch.tensor([[1, 5, 9, 2, 0]])
    torch.testing.assert_close(full(input_ids=ids).logits, plain(input_ids=ids).logits, rtol=0, atol=0)
    assert teacher.config.intermediate_size == 16  # the teacher is untouched


def test_a_pruned_student_saves_and_reloads_with_its_width(tmp_path):
    from transformers import AutoModelForSequenceClassification

    student = build_transformer_student(_bert(), StudentParams(num_layers=1, intermediate_size=10))
    assert student.bert.encoder.layer[0].intermediate.dense.weight.shape == (10, 8)
    student.save_pretrained(tmp_path / "s")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "s").eval()
    ids = torch.tensor([[1, 5, 9, 2]])
    torch.testing.assert_close(reloaded(input_ids=ids).logits, student(input_ids=ids).logits)
    assert sum(p.numel() for p in reloaded.parameters()) < sum(p.numel() for p in _bert().parameters())


def test_distilbert_keeps_its_width_under_its_own_key():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    model = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=50, dim=8, hidden_dim=16, n_layers=2,
                                                                 n_heads=2, max_position_embeddings=16))
    student = build_transformer_student(model, StudentParams(num_layers=1, intermediate_size=12))
    assert student.config.hidden_dim == 12 and student.distilbert.transformer.layer[0].ffn.lin1.out_features == 12
    logits = student(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert np.isfinite(logits.detach().numpy()).all()


def test_bad_widths_fail_with_the_key_named():
    with pytest.raises(ParamsError, match="intermediate_size 17"):
        build_transformer_student(_bert(), StudentParams(num_layers=1, intermediate_size=17))  # wider than 16
    with pytest.raises(ValidationError, match="student.hidden_size applies only to init: random"):
        StudentParams(num_layers=1, hidden_size=16)  # caught at parse time, before any work
    with pytest.raises(ValidationError, match="student.num_heads"):
        StudentParams(num_heads=4)
    with pytest.raises(ParamsError, match="equals the hidden width"):
        prune_feed_forward(_bert(intermediate=8), 2)
