"""Backs ``notebooks/inference/03_quantization.ipynb``: weight quantisation (int8 / int4, symmetric and zero-point,
per tensor, per channel and group-wise) and GPTQ against round-to-nearest at 4 bits.

After the KDD 2024 tutorial "Inference optimization of foundation models on AI accelerators" (Park et al.,
arXiv 2407.09111, "model compression") and the primary papers: Jacob et al. 2018 (integer quantisation with
scales and zero points), Dettmers et al. 2022 (LLM.int8(), outliers), Frantar et al. 2023 (GPTQ).

The quantisers live in the core module :mod:`lionsnb.inference.quantizers`; this module holds the notebook's
settings, experiments, tables, figures and exercise checks. What it runs, on SmolLM2-135M-Instruct (offline)
unless ``MODEL`` names another Llama-style model:

* the quantisers on vectors with known answers and on synthetic weights (error <= s/2, the effect of
  granularity on rows of different scales and on outlier columns);
* round-to-nearest (RTN) schemes on every linear layer of a copy of the model: weight error, packed memory and
  perplexity on a passage of a Shakespeare play (``EVAL_PLAY``) with sliding windows;
* GPTQ at 4 bits, calibrated on a few hundred tokens of another play (``CALIB_PLAY``), against RTN with the same
  scheme: per-layer output error on held-out inputs and perplexity;
* a precomputed sweep over bits (2, 3, 4, 8) x group size (32, 64, 128, per channel) for the explorer.

The computations the notebook caches take the model's name and device and load it with
:func:`lionsnb.inference.llama.load_model`; they quantise a copy, never the loaded model.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import torch

from lionsnb.context import setup_for
from lionsnb.display import show_source, table
from lionsnb.exercises import ExerciseResult, check_exercise
from lionsnb.inference.corpus import passage_ids
from lionsnb.inference.llama import load_model
from lionsnb.inference.quantizers import (
    GRANULARITIES,
    MODES,
    Scheme,
    bits_per_weight,
    code_range,
    correlated_inputs,
    dequantize_codes,
    fake_quantize,
    gptq_model,
    gptq_quantize,
    linear_layers,
    model_memory,
    output_error,
    packed_bytes,
    perplexity,
    qparams,
    quantize,
    quantize_model,
    relative_error,
    restore_model,
    rtn_layers,
    scheme_for,
)
from lionsnb.lm import model_knob
from lionsnb.params import Knob, MethodSpec
from lionsnb.plotting import figure, label
from lionsnb.progress import progress as progress_bar
from lionsnb.runtime import load_average
from lionsnb.widgets import explore

#: the explorer's grid: bits x group size (0 = one group per output channel)
SWEEP_BITS = (2, 3, 4, 8)
SWEEP_GROUPS = (32, 64, 128, 0)
#: the 4-bit comparison of GPTQ and RTN (the group size of most published int4 checkpoints)
GPTQ_BITS, GPTQ_GROUP = 4, 128

SPEC = MethodSpec(
    name="inference.nb03_quantization",
    title="Inference 3: quantisation (int8 / int4, granularity, GPTQ vs round-to-nearest)",
    profiles={
        # eval_tokens: the perplexity passage of EVAL_PLAY, scored with windows of `window` tokens moved by
        # `stride`; calib_tokens: GPTQ calibration tokens of CALIB_PLAY in sequences of calib_seq; heldout_tokens:
        # other tokens of EVAL_PLAY (Act I) on which each layer's output error is measured; gptq_layers: decoder
        # layers quantised by GPTQ (None: all of them; RTN is compared on the same layers); sweep_ppl_tokens:
        # the shorter passage (one window) scored at every point of the bits x group sweep, sweep_ppl_bits: the
        # bit widths whose sweep points get a perplexity; sweep_layers: the weight error of the other points is
        # measured on the linears of the first sweep_layers decoder layers (None: all)
        "smoke": dict(eval_tokens=256, window=128, stride=64, calib_tokens=128, calib_seq=128, heldout_tokens=128,
                      gptq_layers=3, percdamp=0.01, sweep_ppl_tokens=128, sweep_ppl_bits=(), sweep_layers=3),
        "teach": dict(eval_tokens=768, window=256, stride=192, calib_tokens=512, calib_seq=256, heldout_tokens=256,
                      gptq_layers=None, percdamp=0.01, sweep_ppl_tokens=192, sweep_ppl_bits=(3, 4),
                      sweep_layers=None),
        "full": dict(eval_tokens=4096, window=512, stride=256, calib_tokens=4096, calib_seq=512,
                     heldout_tokens=1024, gptq_layers=None, percdamp=0.01, sweep_ppl_tokens=512,
                     sweep_ppl_bits=(2, 3, 4, 8), sweep_layers=None),
    },
    knobs={
        "model": model_knob("the Llama-style model to quantise"),
        "eval_play": Knob("hamlet", "the play whose Act III is the perplexity passage (a name from "
                          "lionsnb.lm.shakespeare_plays)", str),
        "calib_play": Knob("macbeth", "the play GPTQ is calibrated on (must differ from eval_play)", str),
        "mode": Knob("zeropoint", "the 4-bit scheme of the GPTQ comparison and of the sweep", str, choices=MODES),
        "act_order": Knob(True, "GPTQ visits columns by decreasing input energy H_jj (the authors act-order "
                          "option, groups fixed beforehand); False: left to right as in the paper", bool),
        "bits": Knob(4, "bits per weight the explorer starts at", int, choices=SWEEP_BITS),
        "group": Knob(128, "group size the explorer starts at (0 = per output channel)", int, choices=SWEEP_GROUPS),
    },
)
setup = setup_for(SPEC)

#: the RTN schemes of the main table (label order = table order)
RTN_SCHEMES = (
    Scheme(8, "symmetric", "tensor"),
    Scheme(8, "symmetric", "channel"),
    Scheme(4, "symmetric", "channel"),
    Scheme(4, "zeropoint", "channel"),
    Scheme(4, "symmetric", "group", 128),
    Scheme(4, "zeropoint", "group", 128),
)

EVAL_START = "ACT III"    # the perplexity passage starts at Act III of EVAL_PLAY
HELDOUT_START = "ACT I"   # held-out layer inputs: the opening of EVAL_PLAY (never scored for perplexity)
CALIB_START = "ACT I"     # calibration: the opening of CALIB_PLAY

#: model answers of the exercises without code (for teachers; `lionsnb answers inference_quantization` prints them)
MODEL_ANSWERS = {
    4: "MODE = symmetric moves the int4 RTN rows of the sweep and of the GPTQ comparison: the symmetric grid has 15 "
       "levels centred on 0 and wastes part of them on the empty side of a skewed group, so its int4 perplexity is "
       "higher than the zero-point grid's (with groups of 128 about 63 against 49 on the 255-token smoke passage, "
       "fp32 35); the int8 rows barely move (255 levels are plenty either way). ACT_ORDER = False changes only "
       "the GPTQ numbers (RTN never looks at the inputs): the columns are then quantised left to right, each group's "
       "scale chosen from the already-updated weights, as in the paper. On this model act-order helps: on the first "
       "three decoder layers the held-out output error ratio GPTQ / RTN is about 0.67 with it and 0.79 without, for "
       "either grid, because the inputs with the most energy are quantised first, while many columns are left to "
       "absorb their error. Quantising the tied embedding and head too costs nothing visible at int8 per channel "
       "(perplexity 35.14 against 35.16 on that passage) but a lot at int4 g128 (62 against 49): every logit goes "
       "through the head, the largest matrix of the model.",
}


# ----------------------------------------------------------------------------- model and text

def model_table(model) -> object:
    """The model's shape and size, from its config and parameters."""
    c = model.config
    n = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    return table({"layers": c.num_hidden_layers, "hidden size": c.hidden_size, "MLP size": c.intermediate_size,
                  "query / KV heads": f"{c.num_attention_heads} / {c.num_key_value_heads}",
                  "vocabulary": c.vocab_size,
                  "embedding and LM head": "tied" if getattr(c, "tie_word_embeddings", False) else "separate",
                  "parameters (millions)": n / 1e6, "dtype": str(next(model.parameters()).dtype)},
                 title="The model, from its config")


def load_texts(tokenizer, sizes, eval_play: str, calib_play: str) -> dict:
    """Token ids of the perplexity passage (Act III of ``eval_play``), the held-out layer inputs (its opening)
    and the calibration batch (the opening of ``calib_play``, shape (B, calib_seq))."""
    from lionsnb.lm import shakespeare, shakespeare_plays

    plays = shakespeare_plays()
    for what, play in (("EVAL_PLAY", eval_play), ("CALIB_PLAY", calib_play)):
        if play not in plays:
            raise ValueError(f"{what} = {play!r}: choose one of {', '.join(plays)}")
    if eval_play == calib_play:
        raise ValueError(f"EVAL_PLAY and CALIB_PLAY are both {eval_play!r}: calibrate on a different play, "
                         "or the perplexity would be measured on text GPTQ has seen")
    evaluation = shakespeare(eval_play)
    if sizes.calib_tokens % sizes.calib_seq:
        raise ValueError(f"calib_tokens ({sizes.calib_tokens}) must be a multiple of calib_seq ({sizes.calib_seq})")
    eval_ids = passage_ids(tokenizer, sizes.eval_tokens, eval_play, EVAL_START)
    heldout = passage_ids(tokenizer, sizes.heldout_tokens, eval_play, HELDOUT_START)
    calib = passage_ids(tokenizer, sizes.calib_tokens, calib_play, CALIB_START)
    # the held-out opening must end before the perplexity passage starts
    act3 = evaluation.find(EVAL_START)
    opening_chars = len(tokenizer.decode(heldout))
    if act3 >= 0 and opening_chars > act3:
        raise ValueError("the held-out tokens run into the perplexity passage: ask for fewer heldout_tokens")
    return {"eval": eval_ids, "heldout": torch.tensor([heldout]),
            "calib": torch.tensor(calib).view(-1, sizes.calib_seq), "eval_text": tokenizer.decode(eval_ids),
            "eval_play": eval_play, "calib_play": calib_play}


def texts_table(texts: dict, sizes) -> object:
    """Where the perplexity passage, the calibration batch and the held-out inputs come from."""
    calib = texts["calib"]
    return table([{"use": "perplexity", "play": texts["eval_play"], "where": "Act III", "tokens": len(texts["eval"]),
                   "how": f"windows of {sizes.window}, stride {sizes.stride}"},
                  {"use": "GPTQ calibration", "play": texts["calib_play"], "where": "the opening",
                   "tokens": calib.numel(), "how": f"{calib.shape[0]} x {calib.shape[1]} tokens"},
                  {"use": "held-out layer inputs", "play": texts["eval_play"], "where": "the opening (before Act III)",
                   "tokens": texts["heldout"].numel(), "how": "one sequence"}],
                 title="The text")


def inventory_table(inv: dict) -> object:
    """The linear layers by projection, the embedding and the rest."""
    rows = [{"part": kind, "count": r["count"], "shape (out, in)": list(r["shape"]),
             "parameters (millions)": r["params"] / 1e6} for kind, r in inv["kinds"].items()]
    rows.append({"part": "embedding" + (" (tied to the LM head)" if inv["tied"] else ""), "count": 1,
                 "parameters (millions)": inv["embedding_params"] / 1e6})
    rows.append({"part": "norms", "parameters (millions)": inv["other_params"] / 1e6})
    return table(rows, title=f"{inv['linear_params'] / 1e6:.1f}M of {inv['total_params'] / 1e6:.1f}M parameters sit "
                             "in linear layers")


def weight_inventory(model) -> dict:
    """What is in the model, by kind: linear layers (by projection name), the embedding, the rest."""
    kinds: dict[str, dict] = {}
    for name, mod in linear_layers(model).items():
        kind = name.split(".")[-1]
        row = kinds.setdefault(kind, {"count": 0, "params": 0, "shape": tuple(mod.weight.shape)})
        row["count"] += 1
        row["params"] += mod.weight.numel()
    emb = model.get_input_embeddings().weight
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    linear = sum(r["params"] for r in kinds.values())
    head = model.get_output_embeddings()
    return {"kinds": kinds, "linear_params": linear, "embedding_params": emb.numel(), "total_params": total,
            "other_params": total - linear - emb.numel(), "tied": head is not None and head.weight is emb}


def distinct_per_block(model, block: int = 32, n_layers: int = 4) -> dict:
    """Distinct values per block of ``block`` consecutive inputs of a row, over the linears of the first decoder
    layers: at most 16 everywhere means the weights already sit on a 4-bit grid per block (the offline SmolLM2
    is dequantised from the GGUF's Q4_1 blocks of 32)."""
    counts = []
    for name, mod in linear_layers(model).items():
        if not name.startswith("model.layers.") or int(name.split(".")[2]) >= n_layers:
            continue
        w = mod.weight.detach()
        if w.shape[1] % block:
            continue
        blocks = w.reshape(-1, block)
        srt = blocks.sort(dim=1).values
        counts.append(1 + (srt[:, 1:] != srt[:, :-1]).sum(1))
    c = torch.cat(counts)
    return {"max": int(c.max()), "median": float(c.float().median()), "blocks": int(c.numel()),
            "share_at_most_16": float((c <= 16).float().mean())}


# ----------------------------------------------------------------------------- small checks

def scheme_table(x: torch.Tensor, schemes: Sequence[Scheme]) -> list[dict]:
    """Codes, scale, zero point and error of a few schemes on one small vector (one row, per tensor)."""
    rows = []
    for s in schemes:
        q = quantize(x.reshape(1, -1), s)
        xh = q.dequantize().flatten()
        rows.append({"scheme": s.label, "codes": q.codes.flatten().tolist(), "scale": float(q.scales.flatten()[0]),
                     "zero": float(q.zeros.flatten()[0]), "dequantized": xh.tolist(),
                     "max_error": float((xh - x).abs().max()), "half_step": float(q.scales.flatten()[0]) / 2})
    return rows


def scheme_rows_table(rows: Sequence[dict]) -> object:
    """:func:`scheme_table` as a table."""
    return table([{"scheme": r["scheme"], "scale s": r["scale"], "zero z": r["zero"],
                   "codes": [int(c) for c in r["codes"]], "dequantised": [round(v, 3) for v in r["dequantized"]],
                   "max |x_hat - x|": r["max_error"], "s / 2": r["half_step"],
                   "within s / 2": r["max_error"] <= r["half_step"] + 1e-7} for r in rows],
                 title="One scale for the whole vector, 3 bits")


def bits_table(schemes: Sequence[Scheme], widths: Sequence[int] = (576, 1536)) -> object:
    """Bits per weight of a few schemes for rows of the model's widths (scale overhead included)."""
    return table([{"scheme": s.label, **{f"rows of {w}": bits_per_weight(s, w) for w in widths}} for s in schemes],
                 title="Stored bits per weight (float32: 32)")


def error_bound_check(seed: int = 0, bits: Sequence[int] = (2, 3, 4, 8)) -> list[dict]:
    """For every mode x granularity x bits on random weights whose rows have different scales (plus a few
    outliers): the largest |x_hat - x| / (s / 2) over elements (it must be <= 1) and the code range used."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(48, 200, generator=g) * torch.logspace(-2, 0, 48)[:, None]
    w[torch.randint(0, 48, (6,), generator=g), torch.randint(0, 200, (6,), generator=g)] *= 25.0
    rows = []
    for mode in MODES:
        for gran in GRANULARITIES:
            for b in bits:
                s = Scheme(b, mode, gran, 64)
                q = quantize(w, s)
                scale = q.scales if gran != "group" else q.scales.repeat_interleave(64, dim=1)[:, :w.shape[1]]
                err = (q.dequantize() - w).abs() / (scale / 2)
                lo, hi = code_range(b, s.symmetric)
                rows.append({"scheme": s.label, "worst_error_over_half_step": float(err.max()),
                             "codes_in_range": bool(q.codes.min() >= lo and q.codes.max() <= hi),
                             "rel_error": relative_error(q.dequantize(), w)})
    return rows


def bound_table(rows: Sequence[dict]) -> object:
    """:func:`error_bound_check` as a table."""
    return table([{"scheme": r["scheme"], "worst |error| / (s / 2)": r["worst_error_over_half_step"],
                   "codes in range": r["codes_in_range"], "relative error": r["rel_error"]} for r in rows],
                 title="Every scheme on a weight with rows of different scales and a few x25 outliers")


def granularity_table(demo: dict) -> object:
    """Relative weight errors of :func:`granularity_demo`."""
    return table({"rows of different scales": demo["rows"], "outlier columns": demo["outliers"]},
                 index="weight", title="Relative weight error, 4 bits, symmetric")


def granularity_demo(seed: int = 0, out: int = 256, inp: int = 512) -> dict:
    """Two synthetic weights: rows of very different scales (per-tensor vs per-channel) and a row-wise Gaussian
    with a few large input columns (per-channel vs group-wise), at 4 bits, symmetric."""
    g = torch.Generator().manual_seed(seed)
    rows_scaled = torch.randn(out, inp, generator=g) * torch.logspace(-2, 0, out)[:, None]
    outlier = 0.02 * torch.randn(out, inp, generator=g)
    cols = torch.randperm(inp, generator=g)[:4]
    outlier[:, cols] *= 50.0
    result = {"rows": {}, "outliers": {}}
    for key, w in (("rows", rows_scaled), ("outliers", outlier)):
        for s in (Scheme(4, "symmetric", "tensor"), Scheme(4, "symmetric", "channel"),
                  Scheme(4, "symmetric", "group", 128), Scheme(4, "symmetric", "group", 32)):
            result[key][s.label] = relative_error(fake_quantize(w, s), w)
    return result


def gptq_toy(seed: int = 0, out: int = 64, inp: int = 128, n: int = 1024, scheme: Scheme | None = None) -> dict:
    """GPTQ vs RTN on one synthetic layer with correlated inputs, and GPTQ with an identity Hessian (= RTN)."""
    scheme = scheme or Scheme(4, "symmetric", "group", 32)
    g = torch.Generator().manual_seed(seed)
    w = 0.05 * torch.randn(out, inp, generator=g)
    x = correlated_inputs(n, inp, seed=seed)
    xtx = x.T @ x
    rtn = fake_quantize(w, scheme)
    gq = gptq_quantize(w, 2 * xtx / n, scheme).dequantize()
    ident = gptq_quantize(w, torch.eye(inp), scheme).dequantize()
    e_rtn, ref = output_error(rtn, w, xtx)
    e_gptq, _ = output_error(gq, w, xtx)
    return {"scheme": scheme.label, "rtn_output_error": e_rtn / ref, "gptq_output_error": e_gptq / ref,
            "rtn_weight_error": relative_error(rtn, w), "gptq_weight_error": relative_error(gq, w),
            "identity_max_diff": float((ident - rtn).abs().max())}


# ----------------------------------------------------------------------------- experiments on the model

def gptq_toy_table(toy: dict) -> object:
    """GPTQ against RTN on the synthetic layer, and with an identity Hessian."""
    return table([{"quantiser": "RTN", "relative output error": toy["rtn_output_error"],
                   "relative weight error": toy["rtn_weight_error"]},
                  {"quantiser": "GPTQ", "relative output error": toy["gptq_output_error"],
                   "relative weight error": toy["gptq_weight_error"]}],
                 title=f"{toy['scheme']}: GPTQ / RTN output error "
                       f"{toy['gptq_output_error'] / toy['rtn_output_error']:.2f}; identity Hessian: "
                       f"max |GPTQ - RTN| = {toy['identity_max_diff']:.1e}")


def working_copy(model):
    """A deep copy whose weights the experiments overwrite (the float32 model itself is never touched)."""
    return copy.deepcopy(model)


def eval_ppl(model, ids, sizes, progress: bool = False) -> dict:
    return perplexity(model, ids, window=sizes.window, stride=sizes.stride, progress=progress)


def rtn_table(model: str, eval_ids: Sequence[int], sizes, device: str = "cpu") -> dict:
    """:func:`rtn_schemes` of :data:`RTN_SCHEMES` on a copy of the model named ``model``."""
    hf_model = load_model(model, device)[0]
    return rtn_schemes(hf_model, working_copy(hf_model), eval_ids, sizes)


def rtn_schemes(model, work, eval_ids, sizes, schemes: Sequence[Scheme] = RTN_SCHEMES) -> dict:
    """fp32 and every RTN scheme: weight error, bits per weight, memory and perplexity (plain dict, cacheable);
    ``work`` is a copy of ``model`` that ends restored."""
    base = eval_ppl(model, eval_ids, sizes)
    mem = model_memory(model, None)
    rows = [{"scheme": "fp32", "bits": 32, "weight_error": 0.0, "memory_ratio": 1.0,
             "model_mb": mem["fp32_bytes"] / 2 ** 20, "model_memory_ratio": 1.0, "ppl": base["ppl"],
             "bits_per_weight": 32.0}]
    layer_errors = {}
    for s in progress_bar(schemes, desc="RTN schemes", unit="scheme"):
        _, rep = quantize_model(model, s, out=work)
        ppl = eval_ppl(work, eval_ids, sizes)
        bpw = 8 * rep.quantized_bytes / rep.quantized_params
        rows.append({"scheme": s.label, "key": s.key, "bits": s.bits, "weight_error": rep.weight_error,
                     "memory_ratio": rep.memory_ratio, "model_mb": rep.model_bytes / 2 ** 20,
                     "model_memory_ratio": rep.model_memory_ratio, "ppl": ppl["ppl"], "bits_per_weight": bpw})
        layer_errors[s.key] = [rep.layer_errors[n] for n in rep.layer_errors]
        names = list(rep.layer_errors)
    restore_model(model, work)
    return {"rows": rows, "tokens": base["tokens"], "windows": base["windows"],
            "forward_tokens": base["forward_tokens"], "layer_names": names, "layer_errors": layer_errors,
            "fp32_bytes": mem["fp32_bytes"]}


def gptq_run(model: str, texts: dict, sizes, mode: str = "zeropoint", act_order: bool = True,
             rtn: dict | None = None, device: str = "cpu") -> dict:
    """:func:`gptq_experiment` on a copy of the model named ``model`` (``rtn``: the result of :func:`rtn_table`,
    whose perplexities are reused when every layer is quantised)."""
    hf_model = load_model(model, device)[0]
    return gptq_experiment(hf_model, working_copy(hf_model), texts, sizes, mode, act_order, rtn)


def gptq_experiment(model, work, texts: dict, sizes, mode: str = "zeropoint", act_order: bool = True,
                    table: dict | None = None, progress: bool = True) -> dict:
    """GPTQ at 4 bits (group 128) against RTN with the same scheme on the same decoder layers: per-layer output
    errors (calibration and held-out inputs), weight errors, perplexities. ``work`` ends restored.

    When every decoder layer is quantised, RTN on them is the RTN model of :func:`rtn_table`, whose perplexity
    is reused from ``table`` (same passage, same windows) instead of being computed again."""
    scheme = Scheme(GPTQ_BITS, mode, "group", GPTQ_GROUP)
    restore_model(model, work)
    n_layers = sizes.gptq_layers or model.config.num_hidden_layers
    known = {r.get("key"): r["ppl"] for r in (table or {}).get("rows", [])}
    if n_layers == model.config.num_hidden_layers and scheme.key in known:
        ppl_rtn = {"ppl": known[scheme.key]}
    else:
        rtn_layers(work, scheme, n_layers)
        ppl_rtn = eval_ppl(work, texts["eval"], sizes)
        restore_model(model, work)
    report = gptq_model(work, texts["calib"], scheme, heldout_ids=texts["heldout"], n_layers=n_layers,
                        percdamp=sizes.percdamp, act_order=act_order, progress=progress)
    ppl_gptq = eval_ppl(work, texts["eval"], sizes)
    restore_model(model, work)
    out = report.as_dict()
    out.update({"scheme": scheme.label, "act_order": act_order, "n_layers": n_layers,
                "all_layers": n_layers == model.config.num_hidden_layers, "ppl_rtn": ppl_rtn["ppl"],
                "ppl_gptq": ppl_gptq["ppl"], "tokens": ppl_gptq["tokens"]})
    return out


def layer_error_ratio(gptq: dict, stream: str = "heldout") -> float:
    """Geometric mean over the quantised linears of (GPTQ output error / RTN output error)."""
    r = np.asarray(gptq[f"gptq_{stream}"]) / np.asarray(gptq[f"rtn_{stream}"])
    return float(np.exp(np.log(r).mean()))


def rtn_rows_table(rtn: dict) -> object:
    """fp32 and every RTN scheme: bits, memory, weight error and perplexity."""
    fp32 = rtn["rows"][0]["ppl"]
    return table([{"scheme": r["scheme"], "bits per weight": r["bits_per_weight"],
                   "linears / float32": r["memory_ratio"], "model MB": r["model_mb"], "weight error": r["weight_error"],
                   "perplexity": r["ppl"], "vs fp32": f"{100 * (r['ppl'] / fp32 - 1):+.1f} %"} for r in rtn["rows"]],
                 title=f"Perplexity on {rtn['tokens']} scored tokens ({rtn['windows']} windows, "
                       f"{rtn['forward_tokens']} tokens through the model)")


def gptq_table(gptq: dict, ppl_fp32: float, n_layers_total: int) -> object:
    """GPTQ against RTN at 4 bits: layer output errors, weight errors, perplexities."""
    scope = "all" if gptq["all_layers"] else f"the first {gptq['n_layers']} of {n_layers_total}"
    better = float(np.mean(np.asarray(gptq["gptq_heldout"]) < np.asarray(gptq["rtn_heldout"])))
    return table({"decoder layers quantised": scope, "act-order": gptq["act_order"],
                  "calibration tokens": gptq["calib_tokens"], "GPTQ seconds": gptq["seconds"],
                  f"output error GPTQ / RTN over {len(gptq['names'])} linears, calibration inputs":
                      layer_error_ratio(gptq, "calib"),
                  "... held-out inputs": layer_error_ratio(gptq, "heldout"),
                  "linears where GPTQ wins (held-out)": better,
                  "mean relative weight error, RTN": float(np.mean(gptq["rtn_weight"])),
                  "... GPTQ": float(np.mean(gptq["gptq_weight"])),
                  "perplexity, fp32": ppl_fp32, "perplexity, RTN": gptq["ppl_rtn"],
                  "perplexity, GPTQ": gptq["ppl_gptq"],
                  "load average": load_average().one},
                 title=f"{gptq['scheme']}: GPTQ against round-to-nearest ({gptq['tokens']} scored tokens)")


def sample_row(model) -> torch.Tensor:
    """The first 256 weights of the row of layer 0's v_proj with the largest |w| (for the explorer's close-up)."""
    lin = linear_layers(model)
    name = next(n for n in lin if n.endswith("v_proj"))
    w = lin[name].weight.detach()
    return w[int(w.abs().amax(1).argmax()), :256].detach().cpu().clone()


def sweep_run(model: str, mode: str, sizes, ppl_ids: Sequence[int] | None = None, device: str = "cpu") -> dict:
    """:func:`sweep` over the explorer's grid on a copy of the model named ``model``."""
    hf_model = load_model(model, device)[0]
    return sweep(hf_model, working_copy(hf_model), mode, sizes, ppl_ids)


def sweep(model, work, mode: str, sizes, ppl_ids: Sequence[int] | None = None,
          bits: Sequence[int] = SWEEP_BITS, groups: Sequence[int] = SWEEP_GROUPS) -> dict:
    """Weight error, memory ratio and bits per weight at every (bits, group) point; perplexity (one window of
    ``ppl_ids``) at the points whose bit width is in ``sizes.sweep_ppl_bits`` (NaN elsewhere; their weight error
    covers every quantised linear); the weight error of the other points over the linears of the first
    ``sizes.sweep_layers`` decoder layers (None: all); the dequantised close-up row at every point."""
    shape = (len(bits), len(groups))
    out = {"bits": list(bits), "groups": list(groups), "weight_error": np.zeros(shape),
           "memory_ratio": np.zeros(shape), "ppl": np.full(shape, np.nan), "mode": mode}
    row = sample_row(model)
    out["row"] = row
    out["row_hat"] = torch.zeros(*shape, row.numel())
    points = [(i, j) for i in range(len(bits)) for j in range(len(groups))]
    subset = {n: mod for n, mod in linear_layers(model).items()
              if sizes.sweep_layers is None or not n.startswith("model.layers.")
              or int(n.split(".")[2]) < sizes.sweep_layers}
    window = len(ppl_ids) if ppl_ids is not None else 0
    for i, j in progress_bar(points, desc="bits x group sweep", unit="point"):
        s = scheme_for(bits[i], groups[j], mode)
        want_ppl = ppl_ids is not None and bits[i] in sizes.sweep_ppl_bits
        if want_ppl:
            _, rep = quantize_model(model, s, out=work)
            out["ppl"][i, j] = perplexity(work, ppl_ids, window=window, stride=window)["ppl"]
            out["weight_error"][i, j], out["memory_ratio"][i, j] = rep.weight_error, rep.memory_ratio
        else:
            num = den = 0.0
            q_bytes = fp_bytes = 0
            for mod in subset.values():
                w = mod.weight.detach()
                num += float((fake_quantize(w, s) - w).pow(2).sum())
                den += float(w.pow(2).sum())
                q_bytes += packed_bytes(tuple(w.shape), s)
                fp_bytes += 4 * w.numel()
            out["weight_error"][i, j], out["memory_ratio"][i, j] = math.sqrt(num / den), q_bytes / fp_bytes
        out["row_hat"][i, j] = fake_quantize(row.reshape(1, -1), s).flatten()
    out["weight_error"], out["memory_ratio"], out["ppl"] = (out[k].tolist() for k in ("weight_error", "memory_ratio",
                                                                                        "ppl"))
    if ppl_ids is not None and any(b in sizes.sweep_ppl_bits for b in bits):
        out["ppl_fp32"] = perplexity(model, ppl_ids, window=window, stride=window)["ppl"]
        restore_model(model, work)
    else:
        out["ppl_fp32"] = float("nan")
    all_ppl = ppl_ids is not None and all(b in sizes.sweep_ppl_bits for b in bits)
    out["error_scope"] = ("all quantised linears" if all_ppl or sizes.sweep_layers is None
                          else f"linears of the first {sizes.sweep_layers} layers")
    out["ppl_tokens"] = window
    return out


# ----------------------------------------------------------------------------- figures

def draw_scheme_example(fig, x: torch.Tensor, bits: int = 3) -> None:
    """A vector, its symmetric and zero-point grids at ``bits`` bits, and the dequantised values."""
    x = x.flatten()
    axes = fig.subplots(1, 2)
    for ax, mode in zip(axes, MODES):
        s = Scheme(bits, mode, "tensor")
        q = quantize(x.reshape(1, -1), s)
        lo, hi = code_range(bits, s.symmetric)
        grid = dequantize_codes(torch.arange(lo, hi + 1).float(), q.scales.flatten()[0], q.zeros.flatten()[0])
        for v in grid:
            ax.axhline(float(v), color="0.8", lw=0.8, zorder=0)
        idx = np.arange(x.numel())
        ax.plot(idx, x.numpy(), "o", label="x", color="C0")
        ax.plot(idx, q.dequantize().flatten().numpy(), "x", label="dequantised", color="C3", ms=8)
        ax.axhline(0.0, color="k", lw=0.8)
        label(ax, "element", "value", f"{s.label}: {hi - lo + 1} levels, s = {float(q.scales.flatten()[0]):.3f}"
              + ("" if s.symmetric else f", z = {int(q.zeros.flatten()[0])}"))
        ax.legend(loc="upper left")


def draw_granularity(fig, demo: dict) -> None:
    axes = fig.subplots(1, 2)
    titles = {"rows": "rows with scales from 0.01 to 1", "outliers": "4 input columns x50 (outliers)"}
    for ax, key in zip(axes, ("rows", "outliers")):
        labels = list(demo[key])
        vals = [demo[key][k] for k in labels]
        ax.bar(range(len(vals)), vals, color=[f"C{i}" for i in range(len(vals))])
        ax.set_xticks(range(len(vals)), [k.replace("int4 sym ", "") for k in labels])
        ax.set_yscale("log")
        label(ax, "granularity (int4 symmetric)", "relative weight error", titles[key])


def draw_gptq_toy(fig, toy: dict) -> None:
    ax = fig.subplots()
    names = ["weight error", "output error"]
    rtn = [toy["rtn_weight_error"], toy["rtn_output_error"]]
    gq = [toy["gptq_weight_error"], toy["gptq_output_error"]]
    xs = np.arange(2)
    ax.bar(xs - 0.18, rtn, 0.36, label="RTN")
    ax.bar(xs + 0.18, gq, 0.36, label="GPTQ")
    ax.set_xticks(xs, names)
    label(ax, "", "relative error", f"one synthetic layer, correlated inputs, {toy['scheme']}")
    ax.set_xlabel("measure")
    ax.legend()


def draw_rtn(fig, rtn: dict) -> None:
    """Perplexity against model memory for every RTN scheme, and the weight error of each scheme."""
    rows = rtn["rows"]
    ax1, ax2 = fig.subplots(1, 2)
    for i, r in enumerate(rows):
        marker = "*" if r["scheme"] == "fp32" else ("o" if r["bits"] == 8 else "s")
        ax1.scatter(r["model_mb"], r["ppl"], marker=marker, s=80 if marker == "*" else 40, color=f"C{i % 10}",
                    label=r["scheme"])
    ax1.axhline(rows[0]["ppl"], color="0.6", ls="--", lw=1)
    label(ax1, "model memory, MB (quantised linears packed, rest float32)", "perplexity",
          f"{rtn['tokens']} scored tokens")
    ax1.legend(fontsize=7, ncol=2)
    q = rows[1:]
    ax2.barh(range(len(q)), [r["weight_error"] for r in q], color=[f"C{i + 1}" for i in range(len(q))])
    ax2.set_yticks(range(len(q)), [r["scheme"] for r in q])
    ax2.set_xscale("log")
    ax2.invert_yaxis()
    label(ax2, "relative weight error ||W_hat - W|| / ||W|| (all quantised linears)", "scheme")


def draw_layer_errors(fig, rtn: dict, keys: Sequence[str]) -> None:
    """Relative weight error of every linear layer, by depth, for a few schemes."""
    names = rtn["layer_names"]
    kinds = sorted({n.split(".")[-1] for n in names})
    axes = fig.subplots(1, len(keys), sharey=False, squeeze=False)[0]
    for ax, key in zip(axes, keys):
        err = rtn["layer_errors"][key]
        for k, kind in enumerate(kinds):
            idx = [i for i, n in enumerate(names) if n.endswith(kind)]
            depth = [int(names[i].split(".")[2]) for i in idx]
            ax.plot(depth, [err[i] for i in idx], "o-", ms=3, lw=1, label=kind, color=f"C{k}")
        label(ax, "decoder layer", "relative weight error", key)
    axes[0].legend(fontsize=7, ncol=2)


def draw_gptq(fig, gptq: dict) -> None:
    """Per-layer output error of GPTQ vs RTN (held-out inputs), and by depth."""
    ax1, ax2 = fig.subplots(1, 2)
    rtn, gq = np.asarray(gptq["rtn_heldout"]), np.asarray(gptq["gptq_heldout"])
    kinds = sorted({n.split(".")[-1] for n in gptq["names"]})
    for k, kind in enumerate(kinds):
        idx = [i for i, n in enumerate(gptq["names"]) if n.endswith(kind)]
        ax1.scatter(rtn[idx], gq[idx], s=12, label=kind, color=f"C{k}")
    lim = [min(rtn.min(), gq.min()) * 0.8, max(rtn.max(), gq.max()) * 1.2]
    ax1.plot(lim, lim, "k--", lw=1, label="equal")
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    label(ax1, "RTN: relative output error ||X(W_hat - W)^T|| / ||X W^T||", "GPTQ: same",
          f"{gptq['scheme']}, held-out inputs ({gptq['heldout_tokens']} tokens)")
    ax1.legend(fontsize=7, ncol=2)
    from matplotlib.ticker import MaxNLocator

    depth = np.array([int(n.split(".")[1]) for n in gptq["names"]])
    layers = sorted(set(depth))
    for stream, style in (("heldout", "o-"), ("calib", "s--")):
        r = np.asarray(gptq[f"gptq_{stream}"]) / np.asarray(gptq[f"rtn_{stream}"])
        ax2.plot(layers, [np.exp(np.log(r[depth == d]).mean()) for d in layers], style, ms=4,
                 label=f"{'held-out' if stream == 'heldout' else 'calibration'} inputs")
    ax2.axhline(1.0, color="k", lw=1)
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    label(ax2, "decoder layer", "GPTQ / RTN output error (geometric mean over the layer)")
    ax2.legend()


def _arr(x) -> np.ndarray:
    return np.asarray(x.tolist() if hasattr(x, "tolist") else x, dtype=float)


def draw_sweep(fig, *, sw: dict, bits: int, group: int) -> None:
    """The explorer: weight error and perplexity over bits x group, and a close-up of one quantised row."""
    i, j = list(sw["bits"]).index(bits), list(sw["groups"]).index(group)
    sw = dict(sw, weight_error=_arr(sw["weight_error"]), ppl=_arr(sw["ppl"]), memory_ratio=_arr(sw["memory_ratio"]))
    ax1, ax2, ax3 = fig.subplots(1, 3)
    names = [f"g{g}" if g else "per-channel" for g in sw["groups"]]
    for jj, name in enumerate(names):
        ax1.plot(sw["bits"], sw["weight_error"][:, jj], "o-", label=name, color=f"C{jj}")
        ok = ~np.isnan(sw["ppl"][:, jj])
        if ok.any():
            ax2.plot(np.asarray(sw["bits"])[ok], sw["ppl"][ok, jj], "o-", label=name, color=f"C{jj}")
    ax1.plot([bits], [sw["weight_error"][i, j]], "o", ms=14, mfc="none", mec="k")
    ax1.set_yscale("log")
    for ax in (ax1, ax2):
        ax.set_xticks(list(sw["bits"]))
        ax.set_xlim(min(sw["bits"]) - 0.5, max(sw["bits"]) + 0.5)
    label(ax1, "bits", "relative weight error", f"{sw['mode']} RTN, {sw.get('error_scope', 'all quantised linears')}")
    ax1.legend(fontsize=7)
    if np.isnan(sw["ppl"]).all():
        ax2.text(0.5, 0.5, "no perplexity in this profile\n(teach computes it at 3 and 4 bits)", ha="center",
                 va="center", transform=ax2.transAxes)
        label(ax2, "bits", "perplexity (short passage)", "perplexity not computed")
    else:
        if np.isnan(sw["ppl"][i, j]):
            title = "perplexity not computed at this point"
        else:
            ax2.plot([bits], [sw["ppl"][i, j]], "o", ms=14, mfc="none", mec="k")
            title = f"perplexity {sw['ppl'][i, j]:.1f} (fp32 {sw['ppl_fp32']:.1f})"
        if np.isfinite(sw.get("ppl_fp32", np.nan)):
            ax2.axhline(sw["ppl_fp32"], color="0.5", ls="--", lw=1, label="fp32")
        ax2.set_yscale("log")
        label(ax2, "bits", f"perplexity ({sw.get('ppl_tokens', '')} tokens, one window)", title)
        ax2.legend(fontsize=7)
    row, hat = np.asarray(sw["row"]), np.asarray(sw["row_hat"][i, j])
    k = np.arange(row.size)
    ax3.plot(k, row, lw=1, label="fp32")
    ax3.step(k, hat, where="mid", lw=1, label="dequantised")
    if group:
        for b in range(group, row.size, group):
            ax3.axvline(b - 0.5, color="0.6", lw=0.8, ls=":")
    label(ax3, "input index (one row of layer 0 v_proj)", "weight",
          f"int{bits} {'g' + str(group) if group else 'per-channel'}: mem {sw['memory_ratio'][i, j]:.3f} x fp32")
    ax3.legend(fontsize=7)


# ----------------------------------------------------------------------------- exercises

def symmetric_reference(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-tensor symmetric quantise-dequantise of ``x``."""
    x = torch.as_tensor(x, dtype=torch.float32)
    return fake_quantize(x.reshape(1, -1), Scheme(bits, "symmetric", "tensor")).reshape(x.shape)


def _vectors():
    g = torch.Generator().manual_seed(3)
    return [(torch.tensor([0.5, -1.2, 2.0, 0.1]), 4), (torch.tensor([-3.0, 1.0, 0.0, 2.9]), 3),
            (torch.randn(20, generator=g), 8), (torch.randn(16, generator=g) * 0.01, 4),
            (torch.tensor([0.0, 0.0, 0.0]), 4)]


def check_exercise_symmetric(attempt, ctx=None) -> ExerciseResult:
    """Exercise 1: per-tensor symmetric quantise-dequantise."""
    return check_exercise("symmetric quantise-dequantise", attempt, symmetric_reference, _vectors(),
                          hint="s = max|x| / (2^(b-1) - 1); q = clamp(round(x / s), -(2^(b-1) - 1), 2^(b-1) - 1); "
                               "return s * q (and zeros when x is all zero).", ctx=ctx)


def zeropoint_reference(x: torch.Tensor, bits: int) -> tuple[float, float]:
    """(scale, zero point) of the per-tensor zero-point scheme (range extended to include 0)."""
    x = torch.as_tensor(x, dtype=torch.float32).reshape(1, -1)
    s, z = qparams(x, bits, symmetric=False)
    return float(s), float(z)


def check_exercise_zeropoint(attempt, ctx=None) -> ExerciseResult:
    """Exercise 2: the scale and zero point of the per-tensor zero-point scheme."""
    cases = [c for c in _vectors() if c[0].abs().max() > 0] + [(torch.tensor([0.2, 0.9, 0.5]), 4),
                                                                (torch.tensor([-2.0, -0.5]), 2)]
    return check_exercise("zero-point scale and zero", attempt, zeropoint_reference, cases,
                          hint="extend [min, max] to contain 0 first; s = (max - min) / (2^b - 1); "
                               "z = round(-min / s).", ctx=ctx)


def bits_reference(bits: int, group_size: int, zero_point: bool) -> float:
    """Bits per weight with fp16 scales (and b-bit zero points) for groups of ``group_size`` inputs."""
    return bits + (16 + (bits if zero_point else 0)) / group_size


def check_exercise_bits(attempt, ctx=None) -> ExerciseResult:
    """Exercise 3: storage bits per weight of a group-wise scheme."""
    cases = [(4, 128, False), (4, 128, True), (8, 576, False), (3, 32, True), (2, 64, False), (4, 32, True)]
    return check_exercise("bits per weight", attempt, bits_reference, cases,
                          hint="every group of g weights stores one fp16 scale (16 bits) and, with a zero point, "
                               "one b-bit zero: b + (16 + b) / g.", ctx=ctx)


# ----------------------------------------------------------------------------- summary

def quantization_summary(rtn: dict, gptq: dict, sw: dict, bound_rows: Sequence[dict]) -> dict:
    """The notebook's headline numbers from its results (a flat dict of finite numbers and booleans)."""
    by = {r.get("key", r["scheme"]): r for r in rtn["rows"]}
    fp32 = by["fp32"]["ppl"]
    g128 = by[Scheme(4, gptq_mode(gptq), "group", 128).key]
    gi, gj = list(sw["bits"]).index(4), list(sw["groups"]).index(128)
    err = _arr(sw["weight_error"])
    out = {
        "int8_error_bound_ok": all(r["worst_error_over_half_step"] <= 1 + 1e-4 and r["codes_in_range"]
                                   for r in bound_rows),
        "ppl_fp32": fp32,
        "ppl_int8_per_channel": by["int8_sym_channel"]["ppl"],
        "ppl_int8_per_tensor": by["int8_sym_tensor"]["ppl"],
        "ppl_int4_per_channel": by["int4_sym_channel"]["ppl"],
        "ppl_int4_g128": g128["ppl"],
        "int8_ppl_increase": by["int8_sym_channel"]["ppl"] / fp32 - 1,
        "weight_error_int8_per_channel": by["int8_sym_channel"]["weight_error"],
        "weight_error_int4_g128": g128["weight_error"],
        "memory_ratio_int8_per_channel": by["int8_sym_channel"]["memory_ratio"],
        "memory_ratio_int4_g128": g128["memory_ratio"],
        "model_memory_ratio_int4_g128": g128["model_memory_ratio"],
        "ppl_int4_rtn": gptq["ppl_rtn"],
        "ppl_int4_gptq": gptq["ppl_gptq"],
        "gptq_layer_error_ratio": layer_error_ratio(gptq, "heldout"),
        "gptq_layer_error_ratio_calib": layer_error_ratio(gptq, "calib"),
        "gptq_layers_better": float(np.mean(np.asarray(gptq["gptq_heldout"]) < np.asarray(gptq["rtn_heldout"]))),
        "gptq_quantized_layers": int(gptq["n_layers"]),
        "sweep_error_int2_over_int8": float(err[0, gj] / err[-1, gj]),
        "sweep_g32_over_per_channel_int4": float(err[gi, 0] / err[gi, -1]),
        "eval_tokens": int(rtn["tokens"]),
    }
    return out


def gptq_mode(gptq: dict) -> str:
    return "symmetric" if " sym " in gptq["scheme"] else "zeropoint"


__all__ = [
    "SPEC", "setup", "MODEL_ANSWERS", "SWEEP_BITS", "SWEEP_GROUPS", "RTN_SCHEMES", "GPTQ_BITS", "GPTQ_GROUP",
    # the package's quantisers the notebook shows and runs
    "Scheme", "quantize", "fake_quantize", "quantize_model", "gptq_quantize", "gptq_model", "bits_per_weight",
    "perplexity", "load_model",
    # the notebook's experiments
    "load_texts", "weight_inventory", "distinct_per_block", "scheme_table", "error_bound_check", "granularity_demo",
    "gptq_toy", "working_copy", "rtn_table", "rtn_schemes", "gptq_run", "gptq_experiment", "layer_error_ratio",
    "sample_row", "sweep_run", "sweep", "quantization_summary", "symmetric_reference", "zeropoint_reference",
    "bits_reference",
    # tables and figures
    "show_source", "table", "figure", "explore", "model_table", "texts_table", "inventory_table",
    "scheme_rows_table", "bits_table", "bound_table", "granularity_table", "gptq_toy_table", "rtn_rows_table",
    "gptq_table", "draw_scheme_example", "draw_granularity", "draw_gptq_toy", "draw_rtn", "draw_layer_errors",
    "draw_gptq", "draw_sweep",
    # exercises
    "check_exercise_symmetric", "check_exercise_zeropoint", "check_exercise_bits",
]
