"""LipsLev notebook 3 (training): scale invariance and its consequences, the baseline's rescaling, settings,
soundness bookkeeping, the lambda sweep, exercises and figures."""
from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lionsnb.lipslev.nb03_training as m
from lionsnb.params import ParameterError
from lionsnb.plotting import unlabelled_axes

matplotlib.use("Agg")

ALPHABET = m.Alphabet(tuple("abcdef"))
TINY = dict(embed_dim=4, hidden=5, kernel_size=3)


def tiny_model(seed=0, lipschitz=True, p=2.0, classes=3, layers=1):
    return m.build_model(ALPHABET, classes, seed=seed, p=p, lipschitz=lipschitz, layers=layers, **TINY)


def strings(n=12, seed=0, lo=2, hi=7):
    rng = np.random.default_rng(seed)
    return [[int(c) for c in rng.integers(1, ALPHABET.size + 1, size=int(rng.integers(lo, hi)))] for _ in range(n)]


def small_sizes(**over):
    sizes = dict(m.SPEC.profiles["smoke"])
    sizes.update(nl_train=300, nl_eval=60, nl_len=(6, 10))
    sizes.update(over)
    return sizes


@pytest.fixture(scope="module")
def nl_task():
    task = m.load_task("numbers_letters", small_sizes(), seed=0)
    task["model"] = dict(embed_dim=8, hidden=8, kernel_size=3)
    return task


@pytest.fixture(scope="module")
def trained(nl_task):
    run = m.train_run(nl_task, optimizer="sgd", lr=100.0, epochs=4, batch_size=64, seed=0, progress=False)
    model = m.model_of(run, nl_task)
    return run, model, m.evaluate(model, nl_task["eval"], max_k=3)


# ----------------------------------------------------------------------------- scale invariance

@pytest.mark.parametrize("p", [1.0, 2.0, math.inf])
@pytest.mark.parametrize("layers", [1, 2])
def test_normalised_model_is_scale_invariant_and_the_raw_one_is_not(p, layers):
    model = tiny_model(seed=3, p=p, layers=layers)
    out = m.scale_invariance_gap(model, strings(), trials=8, seed=1)
    assert out["gap"] < 1e-12 * max(out["logit_scale"], 1.0)
    assert out["raw_change"] > 1e-2  # the same measurement does see a change without normalisation


def test_scaled_copy_scales_each_layer_and_checks_its_input():
    model = tiny_model()
    copy = m.scaled_copy(model, [2.0, 3.0, 0.5])
    assert torch.allclose(copy.emb.weight, 2.0 * model.emb.weight)
    assert torch.allclose(copy.conv0.weight, 3.0 * model.conv0.weight)
    assert torch.allclose(copy.C.weight, 0.5 * model.C.weight)
    with pytest.raises(ValueError):
        m.scaled_copy(model, [1.0, 1.0])
    with pytest.raises(ValueError):
        m.scaled_copy(model, [1.0, -1.0, 1.0])


def test_gradient_is_orthogonal_only_when_it_flows_through_the_normalisers():
    model, seqs = tiny_model(seed=5), strings(16, seed=2)
    labels = [i % 3 for i in range(len(seqs))]
    true_grad = m.layer_gradients(model, seqs, labels)
    detached = m.layer_gradients(model, seqs, labels, detach_constants=True)
    assert max(abs(v["cosine"]) for v in true_grad.values()) < 1e-12
    assert max(abs(v["cosine"]) for v in detached.values()) > 1e-4
    with pytest.raises(ValueError):
        m.layer_gradients(tiny_model(lipschitz=False), seqs, labels, detach_constants=True)


def test_gradient_scales_like_one_over_alpha_for_the_normalised_model_only():
    seqs = strings(16, seed=4)
    labels = [i % 3 for i in range(len(seqs))]
    assert m.gradient_scaling_gap(tiny_model(seed=1), seqs, labels, alpha=8.0) < 1e-12
    assert m.gradient_scaling_gap(tiny_model(seed=1, lipschitz=False), seqs, labels, alpha=8.0) > 1e-3


def test_plain_sgd_step_grows_the_norm_by_pythagoras_and_effective_lr_is_lr_over_norm_squared():
    model = m.as_float64(tiny_model(seed=2))
    seqs = strings(16, seed=6)
    labels = torch.as_tensor([i % 3 for i in range(len(seqs))])
    F.cross_entropy(model(m.pad_batch(seqs)), labels).backward()
    lr = 0.7
    for _, w in m._layers(model):
        g = w.grad.detach()
        new = w.detach() - lr * g
        assert float(new.norm() ** 2) == pytest.approx(float(w.detach().norm() ** 2 + lr ** 2 * g.norm() ** 2),
                                                       rel=1e-12)
    eff = m.effective_learning_rates(model, 100.0)
    assert eff["embedding"] == pytest.approx(100.0 / float(model.emb.weight.detach().norm()) ** 2)
    assert set(eff) == {"embedding", "conv0", "head"}


def test_effective_constants_are_one_and_the_rescaled_raw_model_is_the_same_function():
    model = tiny_model(seed=7)
    assert all(abs(v - 1.0) < 1e-12 for v in m.normalised_constants(model).values())
    assert m.rescale_gap(ALPHABET, 3, strings(), seed=7, **TINY) < 1e-12
    raw = m.rescale_to_one_lipschitz(tiny_model(seed=7, lipschitz=False))
    assert float(m.lipschitz_penalty(raw).detach()) == pytest.approx(1.0, rel=1e-6)
    # the raw model is NOT the same function before rescaling
    raw0 = m.as_float64(tiny_model(seed=7, lipschitz=False))
    ids = m.pad_batch(strings())
    assert (raw0(ids) - m.as_float64(model)(ids)).abs().max() > 1e-3


def test_schedule_factors():
    cyc = m.schedule_factors(9)
    assert cyc[0] == 0 and cyc[4] == 1 and cyc[-1] == 0 and cyc[2] == pytest.approx(0.5)
    assert m.schedule_factors(5, "constant") == [1.0] * 5


# ----------------------------------------------------------------------------- settings and data

def test_resolve_optimizer():
    teach, full = m.SPEC.profiles["teach"], m.SPEC.profiles["full"]
    assert m.resolve_optimizer(teach, "auto", 0.0) == ("adam", 1e-2)
    assert m.resolve_optimizer(full, "auto", 0.0) == ("sgd", 100.0)  # the paper's settings
    assert m.resolve_optimizer(teach, "sgd", 0.0) == ("sgd", m.DEFAULT_LR["sgd"])
    assert m.resolve_optimizer(teach, "sgd", 3.0) == ("sgd", 3.0)
    with pytest.raises(ValueError):
        m.resolve_optimizer(teach, "rmsprop", 0.0)
    with pytest.raises(ValueError):
        m.resolve_optimizer(teach, "sgd", -1.0)
    assert full["epochs"] == 30 and full["train_max_len"] == 1000


def test_spec_knobs_are_validated():
    assert m.SPEC.validate_knobs({})["optimizer"] == "auto"
    with pytest.raises(ParameterError):
        m.SPEC.validate_knobs({"optimizer": "rmsprop"})
    with pytest.raises(ParameterError):
        m.SPEC.validate_knobs({"lr": -1.0})


def test_load_task_numbers_letters_and_fallback(monkeypatch):
    task = m.load_task("numbers_letters", small_sizes(), seed=0)
    assert len(task["train"]) == 300 and len(task["eval"]) == 60 and task["classes"] == 2
    assert task["train"].texts != task["eval"].texts
    assert all(6 <= len(t) <= 10 for t in task["train"].texts)

    def missing(**kwargs):
        raise FileNotFoundError("no AG-News here")

    monkeypatch.setattr(m, "offline_split", missing)
    fallback = m.load_task("ag_news", small_sizes(), seed=0)
    assert fallback["name"] == "numbers_letters" and "not available" in fallback["note"]
    assert fallback["model"] == m.MODEL_SIZES["numbers_letters"]
    with pytest.raises(ValueError):
        m.load_task("imdb", small_sizes())


def test_reg_settings():
    name, reg = m.reg_settings(m.SPEC.profiles["teach"], "auto")
    assert name == "numbers_letters" and reg["epochs"] >= 1
    assert m.reg_settings(m.SPEC.profiles["full"], "auto")[0] == "ag_news"
    with pytest.raises(ValueError):
        m.reg_settings(m.SPEC.profiles["teach"], "imdb")


# ----------------------------------------------------------------------------- training, certification, soundness

def test_train_run_round_trips_and_records_history(trained, nl_task):
    run, model, ev = trained
    again = m.model_of(run, nl_task)
    ids = m.pad_batch([nl_task["alphabet"].encode(t) for t in nl_task["eval"].texts[:5]])
    assert torch.equal(model(ids), again(ids))
    assert len(run["history"]["loss"]) == 4 and run["n_train"] == 300
    assert ev["verified"][0] >= ev["verified"][1] >= ev["verified"][2]
    assert ev["verified"][0] > 0.6  # it learns the easy task
    assert len(ev["radii"]) == len(nl_task["eval"])


def test_shortest_rows_takes_the_shortest_of_each_group():
    from lionsnb.lipslev import shortest_rows

    radii = [2, 0, 1, -1, 0, 3, 1]
    lengths = [50, 10, 30, 5, 20, 40, 30]
    assert shortest_rows(radii, lengths, 2, 1) == ([2, 6], [1])
    assert shortest_rows(radii, lengths, 1, 5) == ([2], [1, 4])                    # no top-up: groups stay short
    assert shortest_rows(radii, lengths, 1, 5, top_up=True) == ([2, 6, 5, 0], [1, 4])  # certified ones fill up
    assert shortest_rows(radii, lengths, 9, 0, top_up=True) == ([2, 6, 5, 0], [1, 4])


def test_soundness_on_a_trained_model_and_its_bookkeeping(trained, nl_task, monkeypatch):
    _, model, ev = trained
    check = m.soundness(model, nl_task["eval"], ev, n_certified=6, n_uncertified=2, progress=False)
    assert check["checked"] >= 1
    assert check["bf_violations"] == 0 and check["attack_violations"] == 0
    assert 0 < check["max_ratio"] <= 1 + 1e-9
    # a (fake) brute force that finds every sentence non-robust must be counted on the certified ones
    real = m.brute_force_many

    def pessimist(*args, **kwargs):
        out = real(*args, **kwargs)
        for r in out:
            r.robust = False
        return out

    monkeypatch.setattr(m, "brute_force_many", pessimist)
    bad = m.soundness(model, nl_task["eval"], ev, n_certified=6, n_uncertified=2, progress=False)
    assert bad["bf_violations"] == bad["checked"] >= 1


def test_soundness_with_nothing_certified(trained, nl_task):
    _, model, ev = trained
    nothing = dict(ev, radii=[-1] * len(ev["radii"]))
    check = m.soundness(model, nl_task["eval"], nothing, n_certified=5, n_uncertified=5, progress=False)
    assert check["checked"] == 0 and check["rows"] == [] and check["neighbours"] == []


def test_sgd_without_momentum_only_grows_the_norms(nl_task):
    sweep = m.lr_sweep(nl_task, [("sgd", 10.0)], epochs=1, n_train=128, momentum=0.0, progress=False)
    assert all(g >= 1.0 for g in sweep["norm_growth"][0])
    assert sweep["layers"] == ["embedding", "conv0", "head"]


def test_tradeoff_structure_and_penalty_effect(nl_task):
    reg = dict(n_train=200, epochs=2, sizes=dict(embed_dim=6, hidden=6, kernel_size=3), max_len=None, lr=1e-2,
               lip_optimizer="sgd", lip_lr=100.0)
    out = m.tradeoff(nl_task, reg, lambdas=(0.0, 1.0), max_k=2, batch_size=64, progress=False)
    assert out["names"] == ["lambda = 0", "lambda = 1", "1-Lipschitz"]
    assert out["lambdas"] == [0.0, 1.0, None]
    assert out["bound"][2] == 1.0
    assert out["bound"][1] < out["bound"][0]  # the penalty keeps the global bound smaller
    assert all(len(v) == 3 for v in out["verified"])


def test_length_radius_correlation():
    assert m.length_radius_correlation({"radii": [0, 1, 2, 3], "lengths": [5, 6, 7, 9]}) == pytest.approx(1.0)
    assert m.length_radius_correlation({"radii": [3, 2, 1, 0, -1], "lengths": [5, 6, 7, 9, 1]}) == pytest.approx(-1.0)
    assert math.isnan(m.length_radius_correlation({"radii": [1, 1, 1], "lengths": [5, 6, 7]}))


# ----------------------------------------------------------------------------- exercises and figures

def test_exercise_references_and_checkers():
    assert m.triangle_reference(0, 5) == 0 and m.triangle_reference(2, 5) == 1 and m.triangle_reference(1, 1) == 1
    assert m.check_exercise_triangle(m.triangle).status == "solved"
    assert m.check_exercise_triangle(lambda s, t: s / max(t - 1, 1)).status == "incorrect"

    def acos_angle(w, g, lr):
        w, new = w.flatten(), (w - lr * g).flatten()
        return math.acos(max(-1.0, min(1.0, float(w @ new / (w.norm() * new.norm())))))

    assert m.check_exercise_turn_angle(acos_angle).status == "solved"
    small_step = m.check_exercise_turn_angle(lambda w, g, lr: lr * float(g.norm() / w.norm()))
    assert small_step.status == "incorrect" and small_step.fn is m.turn_angle

    def penalty(emb, kernel, head):
        return float(torch.cdist(emb, emb).max() * torch.linalg.matrix_norm(kernel.permute(2, 0, 1), ord=2).sum()
                     * torch.cdist(head, head).max())

    assert m.check_exercise_penalty(penalty).status == "solved"
    assert m.check_exercise_penalty(lambda e, k, h: penalty(e[1:], k, h)).status == "incorrect"  # pad row missing
    def max_tap(e, k, h):
        return float(torch.cdist(e, e).max() * torch.linalg.matrix_norm(k.permute(2, 0, 1), ord=2).max()
                     * torch.cdist(h, h).max())

    assert m.check_exercise_penalty(max_tap).status == "incorrect"  # M(K) sums over the taps


def test_penalty_reference_matches_the_training_penalty():
    model = tiny_model(seed=9, lipschitz=False)
    expected = float(m.lipschitz_penalty(model).detach())
    assert m.penalty_reference(*m.raw_weights(model)) == pytest.approx(expected, rel=1e-6)


def test_figures_label_every_axis(trained, nl_task):
    run, model, ev = trained
    sweep = {"names": ["lambda = 0", "1-Lipschitz"], "lambdas": [0.0, None], "ks": [0, 1, 2, 3],
             "verified": [[0.9, 0.2, 0.0, 0.0], [0.8, 0.5, 0.2, 0.0]], "bound": [5.0, 1.0],
             "radii": [[0, 1, -1, 0], [2, 1, 0, 3]]}
    check = {"radius": [1, 2, 0], "ratio": [0.5, 0.7, 0.9], "bf_robust": [True, True, False],
             "attacked": [False, False, True]}
    lr = {"configs": [["sgd", 1.0], ["adam", 0.01]], "eval_acc": [0.8, 0.9], "norm_growth": [[1, 2, 3], [1, 1, 1]],
          "layers": ["embedding", "conv0", "head"]}
    seqs = [nl_task["alphabet"].encode(t) for t in nl_task["eval"].texts[:4]]
    draws = [(m.draw_scale, dict(model=model, seqs=seqs, alphas=[0.1, 1.0, 10.0])),
             (m.draw_history, dict(history=run["history"])),
             (m.draw_head, dict(distances=m.head_distances(tiny_model()), classes=["a", "b", "c"])),
             (m.draw_verified, dict(evaluation=ev)), (m.draw_soundness, dict(check=check)),
             (m.draw_tradeoff, dict(sweep=sweep, main=ev, main_name="main")),
             (m.draw_model_view, dict(sweep=sweep, model="1-Lipschitz")), (m.draw_lr_sweep, dict(sweep=lr))]
    for draw, kwargs in draws:
        fig = m.figure(10, 4)
        draw(fig, **kwargs)
        assert unlabelled_axes(fig) == [], draw.__name__
        matplotlib.pyplot.close(fig)


def test_turn_angle_of_an_orthogonal_step_is_the_arctangent():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    g = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    g -= (g * w).sum() / (w * w).sum() * w
    for lr in (0.01, 1.0, 100.0):
        assert m.turn_angle(w, g, lr) == pytest.approx(math.atan(lr * float(g.norm() / w.norm())), rel=1e-12)
    assert m.turn_angle(w, torch.zeros_like(w), 1.0) == pytest.approx(0.0, abs=1e-12)
    grads = m.raw_gradients(tiny_model(), strings(6), [0, 1, 2, 0, 1, 2])
    assert set(grads) == {"embedding", "conv0", "head"}
    for w_, g_ in grads.values():  # scale invariance: the gradient is orthogonal to the weights
        assert abs(float((w_ * g_).sum())) <= 1e-10 * float(w_.norm() * g_.norm()) + 1e-15


def test_tables_of_the_notebook(trained, nl_task):
    run, model, ev = trained
    assert len(m.history_table(run["history"])) == 4
    assert m.verified_table(ev).column("k") == ev["ks"]
    check = m.soundness(model, nl_task["eval"], ev, n_certified=3, n_uncertified=1, progress=False)
    assert "certified but brute force finds a flip" in repr(m.soundness_table(check, ev["per_sentence_s"]))
    sweep = {"names": ["lambda = 0", "lambda = 0.1", "1-Lipschitz"], "lambdas": [0.0, 0.1, None],
             "verified": [[0.9, 0.2, 0.0, 0.0], [0.8, 0.6, 0.1, 0.0], [0.8, 0.5, 0.2, 0.1]], "bound": [5.0, 1.2, 1.0],
             "seconds": [1.0, 1.0, 1.0], "n_train": 10, "epochs": 1}
    summary = m.tradeoff_summary(sweep)
    assert summary["best"] == 1 and summary["lip"] == 2 and summary["diffs"][1] == pytest.approx(-0.1)
    assert len(m.tradeoff_table(sweep)) == 3 and len(m.tradeoff_summary_table(sweep)) == 3
    assert len(m.gradients_table(m.layer_gradients(model, [[1, 2]], [0]), m.layer_gradients(model, [[1, 2]], [0]),
                                 0.0)) == 3
    assert set(m.MODEL_ANSWERS) == {4}
