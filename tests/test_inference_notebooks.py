"""The inference series' notebooks and notebook modules: what issues 11 and 17 asked of them, checked statically
(no notebook runs here: tests/test_notebooks.py executes them)."""
from __future__ import annotations

import ast
import importlib
import math
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from lionsnb import structure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = {
    "01_attention": "lionsnb.inference.nb01_attention",
    "02_kv_cache": "lionsnb.inference.nb02_kv_cache",
    "03_quantization": "lionsnb.inference.nb03_quantization",
    "04_speculative": "lionsnb.inference.nb04_speculative",
}


def _read(stem: str) -> structure.Structure:
    return structure.read(ROOT / "notebooks" / "inference" / f"{stem}.ipynb")


@pytest.mark.parametrize("stem", sorted(NOTEBOOKS))
def test_every_cached_call_takes_a_module_function_and_its_arguments(stem):
    """ctx.cached(name, m.fn, **kwargs): the key is the arguments, so it cannot drift from the computation."""
    st = _read(stem)
    module = importlib.import_module(NOTEBOOKS[stem])
    calls = [call for i in range(len(st.cells)) for call in st.calls(i, "cached")]
    assert calls, f"{stem}: no cached computation found"
    for call in calls:
        assert len(call.args) == 2 and not any(isinstance(a, ast.Lambda) for a in call.args), ast.unparse(call)
        fn = call.args[1]
        assert isinstance(fn, ast.Attribute) and isinstance(fn.value, ast.Name) and fn.value.id == "m", \
            ast.unparse(call)
        target = getattr(module, fn.attr)
        params = set(__import__("inspect").signature(target).parameters)
        passed = {kw.arg for kw in call.keywords}
        assert passed <= params, f"{stem}: {ast.unparse(call)} passes {passed - params}, which {fn.attr} does not take"


def _shown_before(st: structure.Structure, exercise: int) -> set[str]:
    heading = next(e.heading_cell for e in st.exercises if e.number == exercise)
    return {expr for cell, expr in st.shown_sources() if cell < heading}


def test_attention_does_not_show_online_update_before_exercise_1():
    """Issue 17 item 2: the Implementation section showed online_update, the answer to exercise 1."""
    st = _read("01_attention")
    assert "m.online_update" not in _shown_before(st, 1)
    assert "m.flash_attention" in _shown_before(st, 1)
    assert "m.causal_mask" not in _shown_before(st, 2) and "m.hbm_accesses_flash" not in _shown_before(st, 3)


def test_quantization_does_not_show_qparams_or_quantize_codes_before_exercises_1_and_2():
    """Issue 17 item 2: the Implementation section showed qparams and quantize_codes, the answers to exercises
    1 and 2."""
    st = _read("03_quantization")
    for exercise in (1, 2):
        shown = _shown_before(st, exercise)
        assert not {"m.qparams", "m.quantize_codes"} & shown, shown
    assert {"m.quantize", "m.gptq_quantize"} <= _shown_before(st, 1)


@pytest.mark.parametrize("stem", sorted(NOTEBOOKS))
def test_no_walls_of_prints_and_no_reexported_numpy(stem):
    st = _read(stem)
    for i in range(len(st.cells)):
        code = st.code(i)
        assert "m.np." not in code and "m.torch." not in code, f"{stem} cell {i}"
        prints = [c for c in st.calls(i, "print")]
        assert len(prints) <= 3, f"{stem} cell {i} prints {len(prints)} times: show a table (m.table) instead"


@pytest.mark.parametrize("stem", sorted(NOTEBOOKS))
def test_every_think_exercise_has_a_model_answer(stem):
    module = importlib.import_module(NOTEBOOKS[stem])
    for ex in _read(stem).exercises:
        if ex.think:
            assert len(module.MODEL_ANSWERS.get(ex.number, "")) > 100, (stem, ex.number)


def test_kv_cache_constants_carry_their_source():
    """Issue 17 item 4: the architecture constants were 'recalled, not read'; now each names its config.json."""
    import lionsnb.inference.nb02_kv_cache as kc

    text = " ".join(structure.source(c) for c in _read("02_kv_cache").cells if c["cell_type"] == "markdown")
    assert "recalled" not in text.lower()
    for name, c in kc.KNOWN_CONFIGS.items():
        assert "config.json" in c["source"], name
        assert c["heads"] % c["kv_heads"] == 0
    # Llama-2-70B: 8192 hidden / 64 heads = 128 per head, 8 KV heads (k_proj 8192 -> 1024)
    assert kc.KNOWN_CONFIGS["Llama-2-70B (GQA-8)"]["head_dim"] * 64 == 8192
    assert 150 < kc.A100_RIDGE < 156   # 312 TFLOP/s over 2.039 TB/s


def test_kv_cache_pool_figure_is_readable():
    """Issue 17 item 11: the pool figure's labels were unreadable (6 pt, overlapping)."""
    import matplotlib.pyplot as plt

    import lionsnb.inference.nb02_kv_cache as kc
    from lionsnb.plotting import unlabelled_axes

    pool = kc.BlockManager(num_blocks=8, block_size=4)
    pool.add_sequence("A")
    pool.append("A", 6)
    pool.fork("A", "B")
    pool.append("B", 1)
    fig = kc.figure(11, 4)
    kc.draw_pool(fig, snapshots=[("fork", kc.pool_snapshot(pool)), ("after", kc.pool_snapshot(pool))])
    assert unlabelled_axes(fig) == []
    texts = [t for ax in fig.axes for t in ax.texts]
    assert texts and min(t.get_fontsize() for t in texts) >= 9
    assert any("2 refs" in t.get_text() for t in texts)
    plt.close(fig)
    tab = kc.pool_table([("fork", kc.pool_snapshot(pool))])
    assert tab.column("block table") == [[0, 1], [0, 2]]


def test_speculative_profiles_generate_enough_tokens():
    """Issue 17 item 10: 8-16 new tokens made acceptance exactly 0 or 1 and capped tokens per call at the budget."""
    import lionsnb.inference.nb04_speculative as sp

    teach = sp.SPEC.sizes("teach")
    assert teach.new_tokens >= 64 and teach.layer_tokens >= 24
    # tokens per call can reach gamma + 1 only if the budget allows many calls at the largest gamma
    assert teach.new_tokens >= 8 * (max(teach.gammas) + 1)
    text = " ".join(structure.source(c) for c in _read("04_speculative").cells)
    assert "tokens_per_verification" not in text and "tok/verif" not in text


def test_sequence_study_counts_tokens_per_verification_call():
    import lionsnb.inference.nb04_speculative as sp

    seq = sp.sequence_study(3, 3, 50, gamma=2, progress=False)
    assert 1.0 <= seq["tokens_per_call"] <= 3.0   # at most gamma + 1 new tokens per verification call
    assert set(seq["tests"]) == {"plain", "speculative", "buggy"}


def test_notebook_tables_show_the_results():
    import lionsnb.inference.nb01_attention as fa
    import lionsnb.inference.nb03_quantization as qz
    import lionsnb.inference.nb04_speculative as sp

    checks = fa.correctness_sweep(fa.random_shapes(2, 20), progress=False)
    assert len(fa.correctness_table(checks)) == 8
    memory = fa.memory_sweep([64, 128], d=16, block_size=16, progress=False)
    assert fa.memory_table(memory).column("N") == [64, 128]
    rows = fa.hbm_rows([512, 4096], d=64, sram_kib=192)
    assert math.isclose(fa.hbm_table(rows, 192).column("standard / flash")[1], rows[1]["ratio"])
    assert len(qz.bound_table(qz.error_bound_check(bits=(4,)))) == 6
    assert len(qz.bits_table([qz.Scheme(4, "symmetric", "group", 128)])) == 1
    assert len(sp.theory_table()) == 4
    p, q = sp.example_distributions(6)
    assert len(sp.pq_table(p, q)) == 3
    sweep = {"gammas": [1, 2], "new_tokens": 8, "layer_tokens": 4, "load_before": 1.0, "load_after": 1.0,
             "prompts": {name: {"rows": {d: [{"equal": True, "acceptance": 0.5, "tokens_per_call": 1.5, "speedup": 1.0,
                                              "calls": 5, "seconds": 1.0, "draft_seconds": 0.1, "target_seconds": 0.9,
                                              "baseline_seconds": 1.0, "accepted": [1, 0], "proposed": [g, g],
                                              "tokens": list(range(8))} for g in (1, 2)] for d in sp.DRAFTS},
                                "baseline_all": [1.0, 1.1], "prompt_tokens": 10, "prefill_steps": 2.0}
                         for name in sp.PROMPTS}}
    tab = sp.sweep_table(sweep)
    assert len(tab) == 8 and "tokens per call" in tab.columns
    assert len(sp.baseline_table(sweep)) == 2
    assert torch.is_tensor(p)
