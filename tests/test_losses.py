import math

import pytest
import torch
import torch.nn.functional as F

from confkd.distill.losses import (
    FEATURE_LOSSES, LOSSES, attention_kl, attention_mse, cls_cosine, cls_mse, embedding_mse, get_loss, hard_ce,
    hidden_cosine, hidden_mse, kl, mse_logits, soft_ce,
)
from confkd.errors import ParamsError

LN3 = math.log(3.0)
# p_S = softmax([0, 0]) = [0.5, 0.5]; p_T = softmax([ln 3, 0]) = [0.75, 0.25]
# KL(T||S) = 0.75 ln(0.75/0.5) + 0.25 ln(0.25/0.5) = 0.304099 - 0.173287 = 0.130812
# KL(S||T) = 0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25)   = -0.202733 + 0.346574 = 0.143841
KL_TS = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
KL_ST = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(2.0)
# H(p_T) = -(0.75 ln 0.75 + 0.25 ln 0.25) = 0.562335
H_T = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))


# ---------------------------------------------------------------- prediction layer

def test_kl_hand_computed_and_batchmean():
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[LN3, 0.0]])
    assert kl(s, t).item() == pytest.approx(0.130812, abs=1e-6)
    assert kl(s, t).item() == pytest.approx(KL_TS, rel=1e-6)
    # second row with equal distributions contributes 0; batchmean divides by B = 2
    s2 = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    t2 = torch.tensor([[LN3, 0.0], [1.0, 2.0]])
    assert kl(s2, t2).item() == pytest.approx(KL_TS / 2, rel=1e-6)


def test_kl_direction_is_teacher_to_student():
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[LN3, 0.0]])
    assert abs(KL_TS - KL_ST) > 0.01  # the example is asymmetric
    assert kl(s, t).item() == pytest.approx(KL_TS, rel=1e-6)
    assert kl(t, s).item() == pytest.approx(KL_ST, rel=1e-6)


def test_kl_temperature_scaling():
    # at tau = 2, logits [2 ln 3, 0] soften to exactly p_T = [0.75, 0.25]: value = 4 * 0.130812
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[2 * LN3, 0.0]])
    assert kl(s, t, temperature=2.0).item() == pytest.approx(4 * KL_TS, rel=1e-6)
    # general: tau^2 * KL of the softened distributions
    torch.manual_seed(0)
    s, t = torch.randn(5, 4), torch.randn(5, 4) * 3
    tau = 3.0
    pt, ps = F.softmax(t / tau, -1), F.softmax(s / tau, -1)
    ref = (pt * (pt.log() - ps.log())).sum(-1).mean() * tau**2
    assert kl(s, t, temperature=tau).item() == pytest.approx(ref.item(), rel=1e-5)


def test_kl_zero_when_logits_equal():
    x = torch.randn(4, 3)
    assert kl(x, x.clone(), temperature=2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_soft_ce_hand_and_equals_kl_plus_teacher_entropy():
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[LN3, 0.0]])
    # -(0.75 ln 0.5 + 0.25 ln 0.5) = ln 2 = KL_TS + H_T
    assert soft_ce(s, t).item() == pytest.approx(math.log(2.0), rel=1e-6)
    assert KL_TS + H_T == pytest.approx(math.log(2.0))
    torch.manual_seed(1)
    s, t = torch.randn(6, 5), torch.randn(6, 5) * 2
    for tau in (1.0, 2.5):
        pt = F.softmax(t / tau, -1)
        entropy = -(pt * pt.log()).sum(-1).mean()
        expected = kl(s, t, tau) + tau**2 * entropy
        assert soft_ce(s, t, tau).item() == pytest.approx(expected.item(), rel=1e-5)


def test_mse_logits_hand_computed_ignores_temperature():
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    t = torch.tensor([[0.0, 2.0], [3.0, 6.0]])
    # errors 1, 0, 0, 4 -> 5 / 4
    assert mse_logits(s, t).item() == pytest.approx(1.25)
    assert mse_logits(s, t, temperature=7.0).item() == pytest.approx(1.25)


def test_hard_ce_ignores_unlabeled_rows():
    # single labelled row: -ln softmax([ln 3, 0])[0] = -ln 0.75
    logits = torch.tensor([[LN3, 0.0], [50.0, -50.0], [-9.0, 9.0]])
    labels = torch.tensor([0, -1, -1])
    assert hard_ce(logits, labels).item() == pytest.approx(-math.log(0.75), rel=1e-6)
    torch.manual_seed(2)
    logits = torch.randn(6, 3)
    labels = torch.tensor([2, -1, 0, -1, 1, 1])
    keep = labels != -1
    assert hard_ce(logits, labels).item() == pytest.approx(F.cross_entropy(logits[keep], labels[keep]).item(), rel=1e-6)


def test_hard_ce_all_unlabeled_is_zero_with_grad():
    logits = torch.randn(3, 2, requires_grad=True)
    loss = hard_ce(logits, torch.tensor([-1, -1, -1]))
    assert loss.item() == 0.0 and not torch.isnan(loss)
    assert loss.grad_fn is not None
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros(3, 2))


# ---------------------------------------------------------------- attention

def _attention_probs(b, h, length, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(b, h, length, length, generator=g), dim=-1)


def _pad_garbage(x, mask, value):
    """Overwrite every (query or key) padded entry of [B,H,L,L] maps with ``value``."""
    x = x.clone()
    real = mask.bool()
    pair = real[:, None, :, None] & real[:, None, None, :]
    x[~pair.expand_as(x)] = value
    return x


def test_attention_mse_hand_computed_with_padding():
    # B=1, H=1, L=2, second token is padding: only entry (query 0, key 0) counts: (0.5 - 0.25)^2 = 0.0625
    s = torch.tensor([[[[0.5, 0.5], [9.0, 9.0]]]])
    t = torch.tensor([[[[0.25, -7.0], [3.0, 4.0]]]])
    assert attention_mse(s, t, torch.tensor([[1, 0]])).item() == pytest.approx(0.0625)
    # without the mask the garbage counts
    assert attention_mse(s, t).item() > 1.0


def test_attention_mse_matches_loop_and_ignores_garbage():
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    s, t = _attention_probs(2, 3, 4, 0), _attention_probs(2, 3, 4, 1)
    total, count = 0.0, 0
    for b in range(2):
        n = int(mask[b].sum())
        for h in range(3):
            for q in range(n):
                for k in range(n):
                    total += (s[b, h, q, k] - t[b, h, q, k]).item() ** 2
                    count += 1
    expected = total / count
    assert attention_mse(s, t, mask).item() == pytest.approx(expected, rel=1e-5)
    garbage = attention_mse(_pad_garbage(s, mask, 100.0), _pad_garbage(t, mask, -100.0), mask)
    assert garbage.item() == pytest.approx(expected, rel=1e-5)


def test_attention_kl_hand_computed_with_padding():
    # B=1, H=1, L=3, third token padded. Row 0: KL([.75,.25] || [.5,.5]) = 0.130812; row 1: identical -> 0.
    # Padded key column and padded query row hold garbage. Mean over 2 real rows -> 0.065406.
    t = torch.tensor([[[[0.75, 0.25, 0.9], [0.5, 0.5, 0.9], [0.1, 0.2, 0.7]]]])
    s = torch.tensor([[[[0.5, 0.5, 0.01], [0.5, 0.5, 0.01], [0.9, 0.05, 0.05]]]])
    mask = torch.tensor([[1, 1, 0]])
    assert attention_kl(s, t, mask).item() == pytest.approx(KL_TS / 2, rel=1e-5)
    assert attention_kl(s, t).item() != pytest.approx(KL_TS / 2, rel=1e-2)


def test_attention_kl_matches_loop_and_ignores_garbage():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    s, t = _attention_probs(2, 2, 5, 3), _attention_probs(2, 2, 5, 4)
    total, rows = 0.0, 0
    for b in range(2):
        n = int(mask[b].sum())
        for h in range(2):
            for q in range(n):
                total += sum(t[b, h, q, k].item() * math.log(t[b, h, q, k].item() / s[b, h, q, k].item()) for k in range(n))
                rows += 1
    expected = total / rows
    assert attention_kl(s, t, mask).item() == pytest.approx(expected, rel=1e-5)
    garbage = attention_kl(_pad_garbage(s, mask, 1e-6), _pad_garbage(t, mask, 0.9), mask)
    assert garbage.item() == pytest.approx(expected, rel=1e-5)
    assert attention_kl(t, t, mask).item() == pytest.approx(0.0, abs=1e-6)


def test_attention_head_count_mismatch_compares_head_averages():
    mask = torch.tensor([[1, 1, 1, 0]])
    s, t = _attention_probs(1, 2, 4, 5), _attention_probs(1, 4, 4, 6)
    s_avg, t_avg = s.mean(1, keepdim=True), t.mean(1, keepdim=True)
    assert attention_mse(s, t, mask).item() == pytest.approx(attention_mse(s_avg, t_avg, mask).item(), rel=1e-6)
    assert attention_kl(s, t, mask).item() == pytest.approx(attention_kl(s_avg, t_avg, mask).item(), rel=1e-6)
    # hand: one real token, head averages 0.5 vs 0.25 -> (0.25)^2
    s1 = torch.tensor([[[[0.4, 0.0]], [[0.6, 0.0]]]]).expand(1, 2, 2, 2).contiguous()
    t1 = torch.tensor([[[[0.25, 0.0]], [[0.25, 0.0]], [[0.25, 0.0]]]]).expand(1, 3, 2, 2).contiguous()
    assert attention_mse(s1, t1, torch.tensor([[1, 0]])).item() == pytest.approx(0.0625)


# ---------------------------------------------------------------- hidden states

def test_hidden_mse_hand_computed_masked():
    # B=1, L=3, D=2, third token padded. Errors on real tokens: (1,0) and (0,3) -> (1 + 9) / (2 tokens * 2 dims) = 2.5
    s = torch.tensor([[[1.0, 0.0], [0.0, 3.0], [100.0, 100.0]]])
    t = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [-100.0, 5.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert hidden_mse(s, t, mask).item() == pytest.approx(2.5)
    assert embedding_mse(s, t, mask).item() == pytest.approx(2.5)
    assert hidden_mse(s, t).item() > 1000


def test_hidden_mse_matches_reference_over_real_tokens():
    torch.manual_seed(7)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    s, t = torch.randn(3, 4, 6), torch.randn(3, 4, 6)
    real = mask.bool()
    expected = F.mse_loss(s[real], t[real]).item()
    assert hidden_mse(s, t, mask).item() == pytest.approx(expected, rel=1e-5)
    s_g, t_g = s.clone(), t.clone()
    s_g[~real] = 1e3
    t_g[~real] = -1e3
    assert hidden_mse(s_g, t_g, mask).item() == pytest.approx(expected, rel=1e-5)


def test_hidden_cosine_masked_identical_opposite_orthogonal():
    mask = torch.tensor([[1, 1, 0]])
    a = torch.tensor([[[1.0, 2.0], [3.0, -1.0], [5.0, 5.0]]])
    garbage = a.clone()
    garbage[0, 2] = torch.tensor([-5.0, -5.0])
    assert hidden_cosine(a, garbage, mask).item() == pytest.approx(0.0, abs=1e-6)  # identical real tokens
    assert hidden_cosine(a, -a, mask).item() == pytest.approx(2.0, abs=1e-6)
    # token 0 orthogonal (1), token 1 identical (0) -> mean 0.5; padded token opposite would raise it
    b = torch.tensor([[[-2.0, 1.0], [3.0, -1.0], [-5.0, -5.0]]])
    assert hidden_cosine(a, b, mask).item() == pytest.approx(0.5, abs=1e-6)
    assert hidden_cosine(a, b).item() == pytest.approx((1 + 0 + 2) / 3, abs=1e-6)


def test_cls_losses_use_position_zero_only():
    s = torch.tensor([[[1.0, 2.0], [9.0, 9.0]], [[0.0, 1.0], [7.0, -7.0]]])
    t = torch.tensor([[[1.0, 4.0], [-9.0, 0.0]], [[1.0, 0.0], [3.0, 3.0]]])
    # position 0 errors: (0, 2) and (1, 1) -> (0 + 4 + 1 + 1) / 4 = 1.5
    assert cls_mse(s, t, torch.tensor([[1, 0], [1, 0]])).item() == pytest.approx(1.5)
    assert cls_mse(s, t, None).item() == pytest.approx(1.5)
    # cos([1,2],[1,4]) = 9 / (sqrt5 sqrt17); [0,1] vs [1,0] orthogonal -> 1
    c = 9 / (math.sqrt(5) * math.sqrt(17))
    assert cls_cosine(s, t, None).item() == pytest.approx(((1 - c) + 1) / 2, rel=1e-5)
    assert cls_cosine(s, -s, None).item() == pytest.approx(2.0, abs=1e-6)


def test_hidden_width_mismatch_is_a_clear_error():
    with pytest.raises(ParamsError, match="projection"):
        hidden_mse(torch.zeros(1, 2, 4), torch.zeros(1, 2, 8), torch.ones(1, 2))


# ---------------------------------------------------------------- dtypes

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_computed_in_float32(dtype):
    torch.manual_seed(8)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    logits_s, logits_t = torch.randn(2, 3), torch.randn(2, 3)
    hs, ht = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    att_s, att_t = _attention_probs(2, 2, 3, 9), _attention_probs(2, 2, 3, 10)
    cases = [
        (kl, (logits_s, logits_t, 2.0)), (soft_ce, (logits_s, logits_t, 2.0)), (mse_logits, (logits_s, logits_t)),
        (attention_mse, (att_s, att_t, mask)), (attention_kl, (att_s, att_t, mask)),
        (hidden_mse, (hs, ht, mask)), (hidden_cosine, (hs, ht, mask)), (cls_mse, (hs, ht, mask)), (cls_cosine, (hs, ht, mask)),
    ]
    for fn, args in cases:
        half = [a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
        ref = [a.to(dtype).float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
        out = fn(*half)
        assert out.dtype == torch.float32 and torch.isfinite(out), fn.__name__
        assert out.item() == pytest.approx(fn(*ref).item(), rel=1e-5, abs=1e-6), fn.__name__
    out = hard_ce(logits_s.to(dtype), torch.tensor([1, -1]))
    assert out.dtype == torch.float32


# ---------------------------------------------------------------- registry

def test_registry_kinds_and_lookup():
    assert get_loss("kl") is kl
    assert get_loss("kl", "prediction") is kl
    assert get_loss("hard_ce", "hard") is hard_ce
    assert get_loss("attention_kl", "attention") is attention_kl
    assert get_loss("embedding_mse", "embedding") is embedding_mse
    assert {LOSSES[n].kind for n in ("kl", "soft_ce", "mse_logits")} == {"prediction"}
    for feature, names in FEATURE_LOSSES.items():
        assert names, feature
        for name in names:
            assert LOSSES[name].kind == "intermediate"
            assert get_loss(name, feature) is LOSSES[name].fn


def test_unknown_loss_lists_available():
    with pytest.raises(ParamsError, match=r"unknown loss 'kld' \(available: .*attention_mse.*kl.*soft_ce"):
        get_loss("kld")


def test_kind_mismatch_errors():
    with pytest.raises(ParamsError, match="cannot be used for feature 'attention'"):
        get_loss("kl", "attention")
    with pytest.raises(ParamsError, match="cannot be used for feature 'attention'"):
        get_loss("hidden_mse", "attention")
    with pytest.raises(ParamsError, match="not a prediction loss"):
        get_loss("hard_ce", "prediction")
    with pytest.raises(ParamsError, match="unknown loss kind"):
        get_loss("kl", "logits")


def test_every_declared_loss_is_implemented_and_the_schema_check_needs_no_torch():
    import subprocess
    import sys

    from confkd.distill.loss_names import LOSS_KINDS

    assert {n: s.kind for n, s in LOSSES.items()} == LOSS_KINDS
    # an undeclared registration fails at once
    from confkd.distill.losses import register_loss
    with pytest.raises(ValueError, match="not declared"):
        register_loss("no_such_loss", "prediction")(lambda s, t, temperature=1.0: s)
    with pytest.raises(ValueError, match="already registered"):
        register_loss("kl", "prediction")(lambda s, t, temperature=1.0: s)
    # parsing params (loss names included) imports no torch: prepare, validate and evaluate start fast
    code = ("import sys; from confkd.config import parse_params; "
            "parse_params({'distill': {'configs': {'t': {'method': 'tinybert'}}}}); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
