"""SAM, ASAM, BiSAM and SAMPa against independent re-derivations, in float64."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import lionsnb.sam as S
from lionsnb.models import MLP

LR, MOMENTUM, WD = 0.1, 0.9, 5e-4


def bn_mlp(seed=0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return MLP(6, [8, 8], 4, batch_norm=True).double()


def batches(n=4, seed=1, size=16):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 6, generator=gen, dtype=torch.float64), torch.randint(0, 4, (size,), generator=gen))
            for _ in range(n)]


def states_close(a: torch.nn.Module, b: torch.nn.Module, atol=1e-10) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.allclose(sa[k].double(), sb[k].double(), atol=atol, rtol=0), f"{k} differs"


class ManualSGD:
    """torch.optim.SGD's update written out: d = g + wd w; buf = m buf + d (buf = d at first); w -= lr buf."""

    def __init__(self, params):
        self.params, self.bufs = list(params), None

    @torch.no_grad()
    def step(self, grads):
        ds = [g + WD * p for p, g in zip(self.params, grads)]
        self.bufs = ds if self.bufs is None else [MOMENTUM * b + d for b, d in zip(self.bufs, ds)]
        for p, b in zip(self.params, self.bufs):
            p.sub_(LR * b)


def running_stats(model):
    return {n: b.clone() for n, b in model.named_buffers() if "running" in n}


def manual_sam_step(model, sgd, x, y, rho, adaptive=False, first_loss=None):
    """SAM re-derived: BN running statistics protected by save/restore instead of momentum 0."""
    params = list(model.parameters())
    loss = (first_loss or S.smooth_cross_entropy)(model(x), y).mean()
    grads = torch.autograd.grad(loss, params)
    scale = [p.detach().abs() if adaptive else torch.ones_like(p) for p in params]
    norm = torch.sqrt(sum(((t * g) ** 2).sum() for t, g in zip(scale, grads)))
    saved_w = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, t, g in zip(params, scale, grads):
            p.add_(rho * t * t * g / (norm + 1e-12))
    saved_stats = running_stats(model)
    grads2 = torch.autograd.grad(S.smooth_cross_entropy(model(x), y).mean(), params)
    with torch.no_grad():
        for n, b in model.named_buffers():
            if n in saved_stats:
                b.copy_(saved_stats[n])
        for p, w in zip(params, saved_w):
            p.copy_(w)
    sgd.step(grads2)


@pytest.mark.parametrize("method, adaptive, first_loss", [
    ("sam", False, None),
    ("asam", True, None),
    ("bisam_log", False, lambda f, t: S.bisam_loss(f, t, "log")),
    ("bisam_tanh_mu1", False, lambda f, t: S.bisam_loss(f, t, "tanh", mu=1.0)),
    ("bisam_tanh_mu10", False, lambda f, t: S.bisam_loss(f, t, "tanh", mu=10.0)),
])
def test_sam_family_equals_rederivation(method, adaptive, first_loss):
    ours, ref = bn_mlp(), bn_mlp()
    opt = S.SAM(ours.parameters(), torch.optim.SGD, rho=0.5 if adaptive else 0.05, adaptive=adaptive, lr=LR,
                momentum=MOMENTUM, weight_decay=WD)
    sgd = ManualSGD(ref.parameters())
    for x, y in batches(4):
        S.sam_step(ours, opt, x, y, S.smooth_cross_entropy, perturbation_loss=first_loss)
        manual_sam_step(ref, sgd, x, y, 0.5 if adaptive else 0.05, adaptive, first_loss)
    for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        if name.endswith("num_batches_tracked"):
            assert int(a) == 2 * 4 and int(b) == 2 * 4  # both passes count, as in the reference code
        else:
            assert torch.allclose(a, b, atol=1e-10, rtol=0), name


def test_sam_changes_the_update():
    ours, sgd_model = bn_mlp(), bn_mlp()
    opt = S.SAM(ours.parameters(), torch.optim.SGD, rho=0.05, lr=LR)
    plain = torch.optim.SGD(sgd_model.parameters(), lr=LR)
    x, y = batches(1)[0]
    S.sam_step(ours, opt, x, y, S.smooth_cross_entropy)
    from lionsnb.training import sgd_step

    sgd_step(sgd_model, plain, x, y, S.smooth_cross_entropy)
    assert not torch.allclose(ours.net[0].weight, sgd_model.net[0].weight)


def test_rho_zero_is_one_base_step():
    ours, base = bn_mlp(), bn_mlp()
    opt = S.SAM(ours.parameters(), torch.optim.SGD, rho=0.0, lr=LR, momentum=MOMENTUM, weight_decay=WD)
    sgd = torch.optim.SGD(base.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    for x, y in batches(3):
        S.sam_step(ours, opt, x, y, S.smooth_cross_entropy)
        sgd.zero_grad()
        S.smooth_cross_entropy(base(x), y).mean().backward()
        sgd.step()
    for (n, a), b in zip(ours.named_parameters(), base.parameters()):
        assert torch.allclose(a, b, atol=1e-12), n


def test_second_pass_leaves_running_stats_untouched():
    model = bn_mlp()
    opt = S.SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=LR)
    x, y = batches(1)[0]
    S.smooth_cross_entropy(model(x), y).mean().backward()
    opt.first_step(zero_grad=True)
    before = running_stats(model)
    S.disable_running_stats(model)
    S.smooth_cross_entropy(model(x), y).mean().backward()
    S.enable_running_stats(model)
    for n, b in running_stats(model).items():
        assert torch.equal(b, before[n]), n
    assert model.net[1].momentum == 0.1  # restored


def test_cumulative_average_bn_keeps_its_counter():
    model = bn_mlp()
    model.net[1].momentum = None
    S.disable_running_stats(model)
    model(batches(1)[0][0])
    S.enable_running_stats(model)
    assert int(model.net[1].num_batches_tracked) == 0 and model.net[1].momentum is None


def test_step_with_closure_equals_explicit_steps():
    a, b = bn_mlp(), bn_mlp()
    oa = S.SAM(a.parameters(), torch.optim.SGD, rho=0.05, lr=LR)
    ob = S.SAM(b.parameters(), torch.optim.SGD, rho=0.05, lr=LR)
    x, y = batches(1)[0]

    def closure():
        loss = S.smooth_cross_entropy(a(x), y).mean()
        loss.backward()
        return loss

    oa.step(closure)
    S.smooth_cross_entropy(b(x), y).mean().backward()
    ob.first_step(zero_grad=True)
    S.smooth_cross_entropy(b(x), y).mean().backward()
    ob.second_step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-12)
    with pytest.raises(ValueError, match="closure"):
        oa.step()
    with pytest.raises(ValueError, match="rho"):
        S.SAM(a.parameters(), torch.optim.SGD, rho=-1.0, lr=0.1)


def test_smooth_cross_entropy_is_kl_with_the_papers_q():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0])
    s = 0.1
    q = torch.full((5, 4), s / 3, dtype=torch.float64)
    q[torch.arange(5), y] = 1 - s
    kl = (q * (q.log() - F.log_softmax(logits, -1))).sum(-1)
    assert torch.allclose(S.smooth_cross_entropy(logits, y, s), kl, atol=1e-14)
    assert torch.allclose(S.smooth_cross_entropy(logits, y, 0.0), F.cross_entropy(logits, y, reduction="none"))
    # not torch's label smoothing, which gives s / K to every class
    assert not torch.allclose(S.smooth_cross_entropy(logits, y, s) + (q * q.log()).sum(-1) * -1,
                              F.cross_entropy(logits, y, reduction="none", label_smoothing=s))


# ----------------------------------------------------------------------------- SAMPa

def manual_sampa(model, data, rho, lam):
    """The SAMPa reference algorithm re-derived with explicit tensors (Eq. 3, with the official code's conventions)."""
    params = list(model.parameters())
    sgd = ManualSGD(params)
    gy = [torch.zeros_like(p) for p in params]
    prev = None
    for t, (x, y) in enumerate(data):
        prev = prev or (x, y)
        x_t = [p.detach().clone() for p in params]
        norm = torch.sqrt(sum((g ** 2).sum() for g in gy))
        with torch.no_grad():
            for p, w, g in zip(params, x_t, gy):
                p.copy_(w + rho * g / (norm + 1e-12))
        g0 = torch.autograd.grad(S.smooth_cross_entropy(model(prev[0]), prev[1]).mean(), params)
        if t == 0:
            direction = gy
        else:
            direction = [g + WD * w + MOMENTUM * b for g, w, b in zip(gy, x_t, sgd.bufs)]
        scratch = copy.deepcopy(model)
        sparams = list(scratch.parameters())
        with torch.no_grad():
            for p, w, d in zip(sparams, x_t, direction):
                p.copy_(w - LR * d)
        g1 = torch.autograd.grad(S.smooth_cross_entropy(scratch(x), y).mean(), sparams)
        with torch.no_grad():
            for p, w in zip(params, x_t):
                p.copy_(w)
        sgd.step([(1 - lam) * a + lam * b for a, b in zip(g0, g1)])
        gy, prev = [g.detach() for g in g1], (x, y)


@pytest.mark.parametrize("lam", [0.0, 0.2, 0.5])
def test_sampa_equals_rederivation(lam):
    ours, ref = bn_mlp(), bn_mlp()
    opt = S.SAMPa(ours, S.smooth_cross_entropy, lr=LR, rho=0.1, lam=lam, momentum=MOMENTUM, weight_decay=WD)
    data = batches(4)
    for x, y in data:
        opt.step(x, y)
    manual_sampa(ref, data, 0.1, lam)
    states_close(ours, ref)


def test_sampa_step_one_is_sgd_and_step_two_is_not():
    ours, base = bn_mlp(), bn_mlp()
    opt = S.SAMPa(ours, S.smooth_cross_entropy, lr=LR, rho=0.1, lam=0.2, momentum=MOMENTUM, weight_decay=WD)
    sgd = torch.optim.SGD(base.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
    data = batches(2)
    opt.step(*data[0])
    sgd.zero_grad()
    S.smooth_cross_entropy(base(data[0][0]), data[0][1]).mean().backward()
    sgd.step()
    states_close(ours, base, atol=1e-12)
    opt.step(*data[1])
    sgd.zero_grad()
    S.smooth_cross_entropy(base(data[1][0]), data[1][1]).mean().backward()
    sgd.step()
    assert not torch.allclose(ours.net[0].weight, base.net[0].weight, atol=1e-8)


def test_sampa_lam_zero_still_perturbs():
    """The official script's lam = 0 degenerates to SGD on the previous batch; ours must not."""
    ours, lagged = bn_mlp(), bn_mlp()
    opt = S.SAMPa(ours, S.smooth_cross_entropy, lr=LR, rho=0.1, lam=0.0)
    sgd = torch.optim.SGD(lagged.parameters(), lr=LR)
    data = batches(3)
    prev = data[0]
    for x, y in data:
        opt.step(x, y)
        sgd.zero_grad()
        S.smooth_cross_entropy(lagged(prev[0]), prev[1]).mean().backward()
        sgd.step()
        prev = (x, y)
    assert not torch.allclose(ours.net[0].weight, lagged.net[0].weight, atol=1e-8)


def test_sampa_rho_zero_is_the_extrapolation_scheme():
    ours, ref = bn_mlp(), bn_mlp()
    opt = S.SAMPa(ours, S.smooth_cross_entropy, lr=LR, rho=0.0, lam=0.5, momentum=MOMENTUM, weight_decay=WD)
    data = batches(3)
    for x, y in data:
        opt.step(x, y)
    manual_sampa(ref, data, 0.0, 0.5)
    states_close(ours, ref)


def test_sampa_rejects_bad_settings():
    with pytest.raises(ValueError, match="lam"):
        S.SAMPa(bn_mlp(), S.smooth_cross_entropy, lam=1.5)
