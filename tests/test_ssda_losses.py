"""lionsnb.ssda losses, anchor sampler and EMA teacher against direct computations on hand-built tensors
(ssda_spec.md, sections 1-6): ignored pixels, no confident pixel, a missing class, ties, float64."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lionsnb.ssda import (
    class_weights,
    consistency_loss,
    ema_alpha,
    ema_update,
    pixel_contrast_loss,
    sample_anchors,
    weighted_cross_entropy,
)

D64 = torch.float64


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D64)


# ------------------------------------------------------------------------------------------- consistency

def direct_consistency(student, teacher, threshold=None):
    """Per-pixel loops over -sum_c p_c log q_c (python floats)."""
    b, c, h, w = student.shape
    terms = []
    for i in range(b):
        for y in range(h):
            for x in range(w):
                t = [float(v) for v in teacher[i, :, y, x]]
                s = [float(v) for v in student[i, :, y, x]]
                mt, ms = max(t), max(s)
                zt = sum(math.exp(v - mt) for v in t)
                zs = sum(math.exp(v - ms) for v in s)
                p = [math.exp(v - mt) / zt for v in t]
                logq = [v - ms - math.log(zs) for v in s]
                if threshold is not None and not max(p) > threshold:
                    continue
                terms.append(-sum(pi * li for pi, li in zip(p, logq)))
    return sum(terms) / len(terms) if terms else 0.0


def test_consistency_matches_direct_computation_and_soft_target_ce():
    s, t = rand(2, 4, 3, 5, seed=1), rand(2, 4, 3, 5, seed=2) * 3
    loss = consistency_loss(s, t)
    assert loss.dtype == D64
    assert abs(float(loss) - direct_consistency(s, t)) < 1e-12
    assert torch.allclose(loss, F.cross_entropy(s, torch.softmax(t, 1)), atol=1e-12, rtol=0)


def test_consistency_teacher_is_detached_and_no_temperature():
    s = rand(1, 3, 2, 2, seed=3).requires_grad_()
    t = rand(1, 3, 2, 2, seed=4).requires_grad_()
    consistency_loss(s, t).backward()
    assert t.grad is None
    # gradient w.r.t. the student logits is (q - p) / N (soft CE, no sharpening)
    p, q = torch.softmax(t.detach(), 1), torch.softmax(s.detach(), 1)
    assert torch.allclose(s.grad, (q - p) / 4, atol=1e-12)


def test_consistency_threshold_is_strict_and_averages_over_kept_pixels():
    s = rand(1, 4, 2, 3, seed=5)
    t = torch.zeros(1, 4, 2, 3, dtype=D64)
    t[0, 0, 0, 0] = 10.0          # one confident pixel
    t[0, 2, 1, 2] = 2.0           # one mildly confident pixel
    # uniform pixels have max prob exactly 0.25: dropped at tau = 0.25 (a tie), kept at tau = 0
    for tau in (0.0, 0.25, 0.5, 0.99):
        assert abs(float(consistency_loss(s, t, tau)) - direct_consistency(s, t, tau)) < 1e-12
    one = consistency_loss(s, t, 0.99)       # a single kept pixel gives its own l_i
    p = torch.softmax(t[0, :, 0, 0], 0)
    assert abs(float(one) + float((p * torch.log_softmax(s[0, :, 0, 0], 0)).sum())) < 1e-12
    everything = consistency_loss(s, t, 0.0)
    assert torch.allclose(everything, consistency_loss(s, t))


def test_consistency_no_confident_pixel_gives_zero_with_zero_gradient():
    s = rand(2, 4, 2, 2, seed=6).requires_grad_()
    t = torch.zeros(2, 4, 2, 2, dtype=D64)                     # uniform teacher: max prob 0.25
    loss = consistency_loss(s, t, 0.25)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert s.grad is None or float(s.grad.abs().max()) == 0.0


# --------------------------------------------------------------------------------------- weighted CE

def direct_wce(logits, target, weights, ignore=250):
    num = den = 0.0
    b, c, h, w = logits.shape
    for i in range(b):
        for y in range(h):
            for x in range(w):
                lab = int(target[i, y, x])
                if lab == ignore:
                    continue
                v = [float(z) for z in logits[i, :, y, x]]
                m = max(v)
                nll = -(v[lab] - m - math.log(sum(math.exp(z - m) for z in v)))
                wt = 1.0 if weights is None else float(weights[lab])
                num += wt * nll
                den += wt
    return num / den


def test_weighted_ce_is_weighted_mean_over_non_ignored_pixels():
    logits = rand(2, 4, 3, 3, seed=7)
    target = torch.tensor([[[0, 1, 250], [2, 2, 3], [250, 0, 1]], [[3, 3, 250], [250, 250, 0], [1, 2, 2]]])
    w = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=D64)
    loss = weighted_cross_entropy(logits, target, w)
    assert loss.dtype == D64
    assert abs(float(loss) - direct_wce(logits, target, w)) < 1e-12
    assert abs(float(weighted_cross_entropy(logits, target, None)) - direct_wce(logits, target, None)) < 1e-12
    # dividing by the pixel count or counting ignored pixels would differ
    assert abs(float(loss) - direct_wce(logits, target, None)) > 1e-3


def test_weighted_ce_absent_class_weight_and_single_class():
    logits = rand(1, 4, 2, 3, seed=8)
    target = torch.tensor([[[0, 1, 1], [0, 250, 1]]])          # classes 2 and 3 missing
    w = torch.tensor([1.0, 2.0, 5.0, 7.0], dtype=D64)
    w2 = w.clone()
    w2[2:] = torch.tensor([1e6, 0.0])
    assert torch.allclose(weighted_cross_entropy(logits, target, w), weighted_cross_entropy(logits, target, w2))
    single = torch.tensor([[[3, 3, 250], [3, 3, 3]]])          # one class present: weights cancel
    assert torch.allclose(weighted_cross_entropy(logits, single, w), weighted_cross_entropy(logits, single, None))
    one = torch.full((1, 2, 3), 250)
    one[0, 1, 2] = 2                                           # one valid pixel gives its own nll
    expected = -torch.log_softmax(logits[0, :, 1, 2], 0)[2]
    assert torch.allclose(weighted_cross_entropy(logits, one, w), expected)


def test_weighted_ce_all_ignored_is_zero_and_resize_quirk():
    logits = rand(1, 3, 2, 2, seed=9).requires_grad_()
    loss = weighted_cross_entropy(logits, torch.full((1, 2, 2), 250), None)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert float(logits.grad.abs().max()) == 0.0
    small = rand(1, 3, 2, 2, seed=10)
    target = torch.randint(0, 3, (1, 4, 4), generator=torch.Generator().manual_seed(0))
    up = F.interpolate(small, size=(4, 4), mode="bilinear", align_corners=True)
    assert torch.allclose(weighted_cross_entropy(small, target, None), F.cross_entropy(up, target))
    with pytest.raises(ValueError):
        weighted_cross_entropy(small, torch.zeros(1, 2, 4, dtype=torch.long), None)


# -------------------------------------------------------------------------------------- class weights

def test_class_weights_numpy_median_even_count():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 15 + [3] * 5 + [250] * 40)
    w = class_weights(labels, 4)
    f = np.array([50, 30, 15, 5]) / 100
    expected = np.sqrt(np.median(f) / f)            # numpy: mean of the two middle values (0.225)
    assert np.allclose(w.numpy(), expected, rtol=1e-12)
    lower = np.sqrt(0.15 / f)                       # torch.median's lower middle would give this
    assert not np.allclose(w.numpy(), lower)
    assert abs(float(w[np.argsort(f)[1]]) - math.sqrt(0.225 / 0.15)) < 1e-12


def test_class_weights_odd_count_and_missing_class():
    labels = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)
    f = np.array([6, 3, 1]) / 10
    assert np.allclose(class_weights(labels, 3).numpy(), np.sqrt(np.median(f) / f))
    w = class_weights(torch.tensor([0] * 6 + [1] * 3 + [2] * 1), 4)       # class 3 missing
    f4 = np.array([6, 3, 1, 0]) / 10
    assert float(w[3]) == 0.0
    assert np.allclose(w[:3].numpy(), np.sqrt(np.median(f4) / f4[:3]))
    w = class_weights(torch.tensor([0] * 7 + [1] * 3), 4)                # two of four absent: median 0.15
    assert np.allclose(w[:2].numpy(), np.sqrt(0.15 / np.array([0.7, 0.3])))
    w = class_weights(torch.tensor([0] * 7 + [1] * 3), 5)                # median frequency 0: over present ones
    assert np.allclose(w[:2].numpy(), np.sqrt(0.5 / np.array([0.7, 0.3]))) and float(w[2:].abs().sum()) == 0
    with pytest.raises(ValueError):
        class_weights(torch.full((5,), 250), 4)


# ------------------------------------------------------------------------------------- pixel contrast

def direct_pixel_contrast(features, labels, tau=0.1, tau_b=0.07):
    """Per-anchor double loop over the spec's formula, stable through an explicit max shift."""
    a, v, d = features.shape
    z = [features[i, j] for i in range(a) for j in range(v)]
    y = [int(labels[i]) for i in range(a) for j in range(v)]
    n = len(z)
    losses = []
    for k in range(n):
        s = [float(z[k] @ z[j]) / tau for j in range(n)]
        neg = [j for j in range(n) if y[j] != y[k]]
        pos = [j for j in range(n) if y[j] == y[k] and j != k]
        terms = []
        for p in pos:
            group = [s[p]] + [s[j] for j in neg]          # one positive plus all negatives
            m = max(group)
            terms.append(s[p] - (m + math.log(sum(math.exp(g - m) for g in group))))
        losses.append(-(tau / tau_b) * sum(terms) / len(terms))
    return sum(losses) / n


def test_pixel_contrast_matches_double_loop():
    f = F.normalize(rand(5, 3, 4, seed=11), dim=-1) * 0.97
    labels = torch.tensor([0, 2, 0, 7, 2])          # non-contiguous class ids
    loss = pixel_contrast_loss(f, labels)
    assert loss.dtype == D64
    assert abs(float(loss) - direct_pixel_contrast(f, labels)) < 1e-10


def test_pixel_contrast_gradient_and_order_invariance():
    f = F.normalize(rand(4, 3, 5, seed=12), dim=-1).requires_grad_()
    labels = torch.tensor([1, 0, 1, 0])
    pixel_contrast_loss(f, labels).backward()

    def naive(x):
        z = x.transpose(0, 1).reshape(-1, x.shape[-1])
        yy = labels.repeat(x.shape[1])
        s = z @ z.T / 0.1
        pos = (yy[:, None] == yy[None]) & ~torch.eye(len(z), dtype=torch.bool)
        neg = yy[:, None] != yy[None]
        negsum = (torch.exp(s) * neg).sum(1, keepdim=True)
        logp = s - torch.log(torch.exp(s) + negsum)
        return -(0.1 / 0.07) * ((logp * pos).sum(1) / pos.sum(1)).mean()

    g = torch.autograd.grad(naive(f.detach().requires_grad_()), [f], allow_unused=True)
    ref = f.detach().clone().requires_grad_()
    naive(ref).backward()
    assert g is not None and torch.allclose(f.grad, ref.grad, atol=1e-12)
    perm = torch.tensor([2, 0, 3, 1])
    views = torch.tensor([1, 2, 0])
    shuffled = f.detach()[perm][:, views]
    assert torch.allclose(pixel_contrast_loss(shuffled, labels[perm]), pixel_contrast_loss(f.detach(), labels))


def test_pixel_contrast_one_positive_per_denominator_not_supcon():
    f = F.normalize(rand(3, 2, 4, seed=13), dim=-1)
    labels = torch.tensor([0, 0, 1])
    z = f.transpose(0, 1).reshape(-1, 4)
    y = labels.repeat(2)
    s = z @ z.T / 0.1
    eye = torch.eye(6, dtype=torch.bool)
    supcon = -(0.1 / 0.07) * ((s - torch.logsumexp(s.masked_fill(eye, -math.inf), 1, keepdim=True))
                              * ((y[:, None] == y[None]) & ~eye)).sum(1) / ((y[:, None] == y[None]) & ~eye).sum(1)
    assert abs(float(pixel_contrast_loss(f, labels)) - float(supcon.mean())) > 1e-3
    assert abs(float(pixel_contrast_loss(f, labels)) - direct_pixel_contrast(f, labels)) < 1e-10


def test_pixel_contrast_single_class_and_large_norms_and_repeats():
    f = rand(3, 2, 4, seed=14)
    assert float(pixel_contrast_loss(f, torch.tensor([5, 5, 5]))) == 0.0       # no negatives
    big = F.normalize(rand(4, 2, 3, seed=15), dim=-1) * 10.0                   # logits ~ 1000 at tau 0.1
    labels = torch.tensor([0, 1, 0, 1])
    loss = pixel_contrast_loss(big, labels)
    assert torch.isfinite(loss) and abs(float(loss) - direct_pixel_contrast(big, labels)) < 1e-8
    rep = F.normalize(rand(2, 2, 3, seed=16), dim=-1)
    rep = torch.cat([rep, rep])                                                # same vectors in two classes
    labels = torch.tensor([0, 1, 2, 3])
    assert abs(float(pixel_contrast_loss(rep, labels)) - direct_pixel_contrast(rep, labels)) < 1e-10
    one_view = F.normalize(rand(4, 1, 3, seed=17), dim=-1)                     # n_view = 1, two rows per class
    labels = torch.tensor([0, 1, 0, 1])
    assert abs(float(pixel_contrast_loss(one_view, labels)) - direct_pixel_contrast(one_view, labels)) < 1e-10


# ------------------------------------------------------------------------------------- anchor sampler

def _maps(b=2, h=6, w=6):
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (b, h, w), generator=gen)
    preds = torch.randint(0, 3, (b, h, w), generator=gen)
    feats = torch.randn(b, 5, h, w, generator=gen, dtype=D64)
    return feats, labels, preds


def test_anchors_are_real_pixels_of_their_class_and_image():
    feats, labels, preds = _maps()
    labels[1, 0, :] = 250
    anchors, alabels = sample_anchors(feats, labels, preds, max_samples=40, max_views=4)
    flat = feats.permute(0, 2, 3, 1).reshape(2, -1, 5)
    counts = [(i, c) for i in range(2) for c in range(3) if int((labels[i] == c).sum()) > 4]
    assert alabels.tolist() == [c for _, c in counts]                         # image-major, ascending class
    assert anchors.shape == (len(counts), min(40 // len(counts), 4), 5) and anchors.dtype == D64
    for row, (i, c) in enumerate(counts):
        idx = []
        for v in anchors[row]:
            match = torch.nonzero((flat[i] == v).all(1)).flatten()
            assert len(match) == 1, "each anchor is the unmodified feature of one pixel"
            idx.append(int(match))
        assert len(set(idx)) == len(idx), "no pixel is drawn twice"
        assert all(int(labels[i].flatten()[p]) == c for p in idx)


def test_anchor_view_count_and_qualification():
    feats = torch.randn(1, 2, 4, 6, dtype=D64)
    labels = torch.zeros(1, 4, 6, dtype=torch.long)
    labels[0, :, 3:] = 1              # 12 pixels each
    labels[0, 0, :] = 2               # class 2: 6 pixels, class 0: 9, class 1: 9
    preds = labels.clone()
    anchors, alabels = sample_anchors(feats, labels, preds, max_samples=21, max_views=8)
    assert alabels.tolist() == [0, 1] and anchors.shape[1] == 8               # 21 // 2 = 10 -> capped at 8
    anchors, alabels = sample_anchors(feats, labels, preds, max_samples=21, max_views=6)
    assert alabels.tolist() == [0, 1]                                         # exactly 6 pixels: dropped
    labels3 = torch.zeros(1, 4, 6, dtype=torch.long)
    labels3[0, :, 2:4] = 1
    labels3[0, :, 4:] = 2             # three classes of 8 pixels
    anchors, alabels = sample_anchors(feats, labels3, labels3, max_samples=21, max_views=7)
    assert anchors.shape[:2] == (3, 7)                                        # odd n_view = 21 // 3
    six = torch.arange(6).repeat(4, 1)[None].repeat(1, 1, 1)                  # 6 classes of 4 pixels
    a, lab = sample_anchors(feats, six, six, max_samples=10, max_views=3)
    assert a.shape[:2] == (6, 1)
    assert sample_anchors(feats, torch.full((1, 4, 6), 250), preds) == (None, None)
    assert sample_anchors(feats, labels, preds, max_views=100) == (None, None)


def _split_counts(n_hard_pool, n_easy_pool, n_view):
    """Build one (image, class) pair with given hard/easy pools; return the sampled hard and easy counts."""
    n = n_hard_pool + n_easy_pool
    labels = torch.zeros(1, 1, n, dtype=torch.long)
    preds = torch.zeros_like(labels)
    preds[0, 0, :n_hard_pool] = 1                              # hard: label 0, predicted 1
    feats = torch.arange(labels.numel(), dtype=D64).reshape(1, 1, 1, -1)
    anchors, alabels = sample_anchors(feats, labels, preds, max_samples=n_view, max_views=n - 1)
    assert alabels.tolist()[0] == 0
    picked = anchors[0, :, 0].long()
    hard = int((picked < n_hard_pool).sum())
    return hard, len(picked) - hard


@pytest.mark.parametrize("pools,n_view,expected", [
    ((10, 10, 6), None, (3, 3)),     # both pools large: half hard, half easy
    ((10, 10, 7), None, (3, 4)),     # odd: easy gets the extra one
    ((10, 2, 7), None, (5, 2)),      # easy short: all easy, hard tops up
    ((2, 10, 7), None, (2, 5)),      # hard short: all hard, easy tops up
    ((3, 10, 6), None, (3, 3)),      # h = n_view/2 exactly counts as enough
])
def test_hard_easy_split(pools, n_view, expected):
    h, e, nv = pools
    assert _split_counts(h, e, nv) == expected


def test_anchor_sampling_is_fresh_each_call():
    feats, labels, preds = _maps(1, 10, 10)
    a1, _ = sample_anchors(feats, labels, preds, max_samples=30, max_views=5)
    a2, _ = sample_anchors(feats, labels, preds, max_samples=30, max_views=5)
    assert not torch.equal(a1, a2)


# ----------------------------------------------------------------------------------------- EMA teacher

class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.bn(self.conv(x))


def test_ema_ramp_values():
    assert ema_alpha(0) == pytest.approx(0.1)
    assert ema_alpha(1) == pytest.approx(2 / 11)
    assert ema_alpha(9) == pytest.approx(10 / 19)
    assert ema_alpha(1789) < 0.995 and ema_alpha(1790) == 0.995 and ema_alpha(10 ** 6) == 0.995
    assert ema_alpha(0) != pytest.approx(1 - 1 / 1)   # not the mean-teacher ramp 1 - 1/(t+1)


def test_ema_update_params_and_bn_statistics_over_steps():
    torch.manual_seed(0)
    student, teacher = Tiny().double(), Tiny().double()
    x = torch.randn(8, 2, 5, 5, dtype=D64)
    t0 = {k: v.clone() for k, v in teacher.state_dict().items()}
    expected = {k: v.clone() for k, v in t0.items()}
    for step in range(5):
        student.zero_grad()
        student(x + step).pow(2).mean().backward()      # BN statistics of the student change every step
        with torch.no_grad():
            for p in student.parameters():
                p -= 0.1 * p.grad
        s_state = {k: v.clone() for k, v in student.state_dict().items()}
        a = ema_update(teacher, student, step)
        assert a == pytest.approx((step + 1) / (step + 10))
        for k, v in s_state.items():
            if torch.is_floating_point(v):
                expected[k] = a * expected[k] + (1 - a) * v
            assert torch.equal(student.state_dict()[k], v), "the student is not modified"
    for k, v in teacher.state_dict().items():
        if k.endswith("num_batches_tracked"):
            assert int(v) == int(t0[k]) == 0, "integer buffers untouched"
        else:
            assert torch.allclose(v, expected[k], atol=1e-12), k
    assert not torch.allclose(teacher.bn.running_mean, t0["bn.running_mean"])     # averaged, not left alone
    assert not torch.allclose(teacher.bn.running_mean, student.bn.running_mean)   # ... and not copied


def test_ema_constant_alpha_matches_closed_form_and_torch_averaged_model():
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    torch.manual_seed(1)
    student = nn.Linear(3, 2).double()
    teacher = nn.Linear(3, 2).double()
    teacher.load_state_dict(student.state_dict())
    swa = AveragedModel(student, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    swa.update_parameters(student)                                             # its first call copies
    w0 = student.weight.detach().clone()
    for k in range(4):
        with torch.no_grad():
            student.weight.add_(0.5)
        ema_update(teacher, student, step=10 ** 6, alpha=0.9)                 # the ramp is past its cap
        swa.update_parameters(student)
    assert torch.allclose(teacher.weight, swa.module.weight, atol=1e-12)
    # closed form: t_k = 0.9^k w0 + sum_j 0.9^(k-j) 0.1 (w0 + 0.5 j)
    closed = 0.9 ** 4 * w0 + sum(0.9 ** (4 - j) * 0.1 * (w0 + 0.5 * j) for j in range(1, 5))
    assert torch.allclose(teacher.weight, closed, atol=1e-12)
