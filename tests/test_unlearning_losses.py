"""Token-level unlearning losses (lionsnb.unlearning.losses) against direct computations on hand-built logits with
masks, in float64: values and gradients with respect to the logits (spec §2)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lionsnb.unlearning import kl_retain, lm_loss, method_loss, npo_loss, npo_muse_logits, sequence_nll

IGN = -100


def _batch(seed=0, B=5, T=7, V=11):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2.0)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[0, :3] = IGN          # TOFU-like: question masked ...
    labels[0, 6] = IGN           # ... and padding
    # row 1: labelled everywhere, position 0 included (never a target)
    labels[2] = IGN               # row 2: no target at all
    labels[2, 0] = 4              # ... only position 0 labelled: still no target
    labels[3] = IGN
    labels[3, T - 1] = 3          # row 3: only the last position
    return logits, labels


def _direct_row_nll(logits_row, labels_row):
    """-log softmax(logits[t])[labels[t+1]] summed over t with labels[t+1] != -100, by an explicit loop."""
    total = torch.zeros((), dtype=logits_row.dtype)
    count = 0
    for t in range(logits_row.shape[0] - 1):
        y = int(labels_row[t + 1])
        if y == IGN:
            continue
        z = logits_row[t]
        total = total + (torch.logsumexp(z, 0) - z[y])
        count += 1
    return total, count


def test_sequence_nll_equals_a_loop_over_target_positions():
    logits, labels = _batch()
    got = sequence_nll(logits, labels)
    want = torch.stack([_direct_row_nll(logits[b], labels[b])[0] for b in range(logits.shape[0])])
    assert got.shape == (logits.shape[0],)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert got[2] == 0.0  # no target -> 0, not NaN
    assert got[3] > 0     # the last position is a target of the logits at T-2


def test_sequence_nll_never_uses_the_last_logits_or_label_zero():
    logits, labels = _batch(1)
    changed = logits.clone()
    changed[:, -1] += 100.0  # the last position's logits predict nothing
    torch.testing.assert_close(sequence_nll(changed, labels), sequence_nll(logits, labels), rtol=0, atol=0)
    lab2 = labels.clone()
    lab2[:, 0] = torch.where(lab2[:, 0] == IGN, torch.tensor(1), torch.tensor(IGN))  # flip position 0
    torch.testing.assert_close(sequence_nll(logits, lab2), sequence_nll(logits, labels), rtol=0, atol=0)


def test_lm_loss_is_token_weighted_not_mean_of_means():
    logits, labels = _batch(2)
    s = [_direct_row_nll(logits[b], labels[b]) for b in range(logits.shape[0])]
    want = sum(v for v, _ in s) / sum(c for _, c in s)
    torch.testing.assert_close(lm_loss(logits, labels), want, rtol=1e-12, atol=1e-12)
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGN)
    torch.testing.assert_close(lm_loss(logits, labels), ce, rtol=1e-12, atol=1e-12)
    mean_of_means = sum(v / c for v, c in s if c) / sum(1 for _, c in s if c)
    assert abs(float(lm_loss(logits, labels)) - float(mean_of_means)) > 1e-3  # rows of different lengths differ


def test_lm_loss_without_target_is_nan_like_hf():
    logits, _ = _batch()
    assert math.isnan(float(lm_loss(logits, torch.full(logits.shape[:2], IGN))))


def test_gradients_match_the_direct_formula():
    logits, labels = _batch(3)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    lm_loss(a, labels).backward()
    s = [_direct_row_nll(b[i], labels[i]) for i in range(b.shape[0])]
    (sum(v for v, _ in s) / sum(c for _, c in s)).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    assert a.grad[:, -1].abs().max() == 0  # the last position gets no gradient


def test_npo_both_algebraic_forms_and_row_mean():
    logits, labels = _batch(4)
    g = torch.Generator().manual_seed(9)
    ref = logits + 0.7 * torch.randn(logits.shape, generator=g, dtype=torch.float64)
    for beta in (0.1, 0.5, 1.0, 2.0):
        s, s_ref = sequence_nll(logits, labels), sequence_nll(ref, labels)
        form1 = -(2 / beta) * torch.log(torch.sigmoid(beta * (s - s_ref))).mean()
        form2 = (2 / beta) * torch.log1p(torch.exp(-beta * (s - s_ref))).mean()
        got = npo_loss(logits, labels, ref, beta=beta)
        torch.testing.assert_close(got, form1, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got, form2, rtol=1e-10, atol=1e-12)
    # the row without target contributes (2/beta) log 2 to the mean over all B rows
    only = torch.full_like(labels, IGN)
    torch.testing.assert_close(npo_loss(logits, only, ref, beta=0.1),
                               torch.tensor(20 * math.log(2), dtype=torch.float64))


def test_npo_uses_summed_not_mean_nll_and_is_stable():
    logits, labels = _batch(5)
    ref = logits.clone()
    ref[..., 0] -= 5.0
    s, s_ref = sequence_nll(logits, labels), sequence_nll(ref, labels)
    want = -(2 / 0.1) * F.logsigmoid(0.1 * (s - s_ref)).mean()
    torch.testing.assert_close(npo_loss(logits, labels, ref), want, rtol=1e-12, atol=1e-12)
    # peaked logits: beta (S - S_ref) of order -1e3; a naive log(1 + exp(.)) would overflow to inf
    peaked = logits * 1e3
    val = npo_loss(logits, labels, peaked, beta=1.0)
    assert torch.isfinite(val) and val > 100


def test_npo_gradient_matches_reference_and_ref_is_constant():
    logits, labels = _batch(6)
    ref = (logits + 0.3).clone().requires_grad_(True)
    a = logits.clone().requires_grad_(True)
    npo_loss(a, labels, ref, beta=0.5).backward()
    b = logits.clone().requires_grad_(True)
    s, s_ref = sequence_nll(b, labels), sequence_nll(logits + 0.3, labels)
    (-(2 / 0.5) * torch.log(torch.sigmoid(0.5 * (s - s_ref))).mean()).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12)
    assert ref.grad is None


def test_kl_retain_direction_and_batchmean_over_all_positions():
    logits, _ = _batch(7)
    g = torch.Generator().manual_seed(3)
    ref = torch.randn(logits.shape, generator=g, dtype=torch.float64)
    p_ref, logp, logq = ref.softmax(-1), logits.log_softmax(-1), ref.log_softmax(-1)
    B, T, _ = logits.shape
    want = (p_ref * (logq - logp)).sum() / (B * T)  # KL(p_ref || p_theta), all B*T rows, no mask
    torch.testing.assert_close(kl_retain(logits, ref), want, rtol=1e-12, atol=1e-12)
    official = F.kl_div(logits.log_softmax(-1).view(-1, logits.shape[-1]), ref.log_softmax(-1).view(-1, ref.shape[-1]),
                        reduction="batchmean", log_target=True)
    torch.testing.assert_close(kl_retain(logits, ref), official, rtol=1e-12, atol=1e-12)
    reverse = (logits.softmax(-1) * (logp - logq)).sum() / (B * T)
    assert abs(float(kl_retain(logits, ref) - reverse)) > 1e-3  # the order of the arguments matters
    assert float(kl_retain(logits, logits)) == pytest.approx(0.0, abs=1e-12)


def test_losses_do_not_modify_inputs():
    logits, labels = _batch(8)
    ref = logits + 1.0
    copies = [t.clone() for t in (logits, labels, ref)]
    sequence_nll(logits, labels), lm_loss(logits, labels), npo_loss(logits, labels, ref), kl_retain(logits, ref)
    for a, b in zip((logits, labels, ref), copies):
        assert torch.equal(a, b)


def test_baselines_are_the_spec_compositions():
    lf, yf = _batch(10)
    lr_, yr = _batch(11)
    rf, rr = lf + 0.2, lr_ - 0.1
    assert torch.equal(method_loss("GA", lf, yf), -lm_loss(lf, yf))
    torch.testing.assert_close(method_loss("GradDiff", lf, yf, lr_, yr), -lm_loss(lf, yf) + lm_loss(lr_, yr))
    torch.testing.assert_close(method_loss("KL", lf, yf, lr_, yr, ref_logits_r=rr),
                               -lm_loss(lf, yf) + kl_retain(lr_, rr))
    torch.testing.assert_close(method_loss("NPO", lf, yf, ref_logits_f=rf), npo_loss(lf, yf, rf))
    torch.testing.assert_close(method_loss("NPO+GD", lf, yf, lr_, yr, ref_logits_f=rf),
                               npo_loss(lf, yf, rf) + lm_loss(lr_, yr))
    torch.testing.assert_close(method_loss("NPO+KL", lf, yf, lr_, yr, ref_logits_f=rf, ref_logits_r=rr),
                               npo_loss(lf, yf, rf) + kl_retain(lr_, rr))
    with pytest.raises(ValueError, match="NGDiff is a direction"):
        method_loss("NGDiff", lf, yf)
    with pytest.raises(ValueError, match="reference"):
        method_loss("NPO", lf, yf)


def test_muse_variant_differs_from_the_paper_npo():
    logits, labels = _batch(12)
    ref = logits * 0.5
    assert abs(float(npo_muse_logits(logits, labels, ref)) - float(npo_loss(logits, labels, ref))) > 1e-3


def test_shape_errors_say_what_to_pass():
    with pytest.raises(ValueError, match=r"\[B, T, V\]"):
        sequence_nll(torch.zeros(3, 4), torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="beta"):
        npo_loss(*_batch()[:2], _batch()[0], beta=0.0)
