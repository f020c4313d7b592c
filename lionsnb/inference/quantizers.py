"""Weight quantisers from scratch: round-to-nearest (RTN) schemes and GPTQ, applied to a causal LM.

Schemes (``b`` bits; the forms of Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference", with the zero point on the integer grid):

* **symmetric (absmax)**: ``s = max|x| / (2^(b-1) - 1)``, ``q = clamp(round(x / s), -(2^(b-1)-1), 2^(b-1)-1)``,
  ``x_hat = s q``. The grid is symmetric around 0 (the code -2^(b-1) is left unused, so 4 bits give 15 levels).
* **zero-point (affine)**: the range is first extended to contain 0 (as in torch.ao observers and the GPTQ
  reference quantiser, so that 0 is always on the grid and ``z`` lies in the code range), then
  ``s = (max - min) / (2^b - 1)``, ``z = round(-min / s)``, ``q = clamp(round(x / s) + z, 0, 2^b - 1)``,
  ``x_hat = s (q - z)``.

Granularity of a weight ``W`` (out x in): one ``(s, z)`` per tensor, per output channel (row), or per group of
``g`` consecutive input columns of a row (the last group of a row may be shorter when ``g`` does not divide
``in``). Stored sizes assume **fp16 scales** (16 bits) and zero points packed at ``b`` bits, codes packed at
``b`` bits: ``b + (16 [+ b]) / g`` bits per weight.

GPTQ (Frantar, Ashkboos, Hoefler, Alistarh, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers", ICLR 2023, arXiv 2210.17323; Algorithm 1) minimises ``||W X - W_hat X||_F^2`` per
layer: with ``H = 2 X X^T`` (plus damping ``lambda = 1 % mean diag H``), it quantises the columns of ``W`` in
order and spreads each column's rounding error over the columns not yet quantised,
``W[:, j+1:] -= (w_j - q_j) / [H^-1]_jj * [H^-1]_{j, j+1:}``, using the upper Cholesky factor of ``H^-1`` and
lazy updates in blocks of 128 columns. Group scales are chosen when the first column of a group is reached, from
the already-updated weights (as in the authors' code). Optionally (``act_order``, the ``--act-order
--static-groups`` options of IST-DASLab/gptq) columns are visited by decreasing ``H_jj`` with group scales fixed
from the original weights. :func:`gptq_model` runs it sequentially over the decoder layers of a HF causal LM.

Everything here is *fake* quantisation: the model keeps float32 weights equal to ``s (q - z)``, which is exact
for measuring error and perplexity but not faster on a CPU (that needs integer kernels); the saving we report is
memory, computed for packed storage.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lionsnb.progress import progress as progress_bar

MODES = ("symmetric", "zeropoint")
GRANULARITIES = ("tensor", "channel", "group")
SCALE_BITS = 16  # scales stored as fp16


# ----------------------------------------------------------------------------- schemes

@dataclass(frozen=True)
class Scheme:
    """How to quantise a weight: bits (2..8), mode (symmetric / zeropoint), granularity and group size."""

    bits: int = 8
    mode: str = "symmetric"
    granularity: str = "channel"
    group_size: int = 128

    def __post_init__(self):
        if not isinstance(self.bits, int) or not 2 <= self.bits <= 8:
            raise ValueError(f"bits = {self.bits!r}: use an integer from 2 to 8")
        if self.mode not in MODES:
            raise ValueError(f"mode = {self.mode!r}: use one of {MODES}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity = {self.granularity!r}: use one of {GRANULARITIES}")
        if self.granularity == "group" and (not isinstance(self.group_size, int) or self.group_size < 1):
            raise ValueError(f"group_size = {self.group_size!r}: use a positive integer (e.g. 32, 64, 128)")

    @property
    def symmetric(self) -> bool:
        return self.mode == "symmetric"

    @property
    def label(self) -> str:
        gran = {"tensor": "per-tensor", "channel": "per-channel"}.get(self.granularity, f"g{self.group_size}")
        return f"int{self.bits} {'sym' if self.symmetric else 'zp'} {gran}"

    @property
    def key(self) -> str:
        """A short identifier usable in metric names, e.g. ``int4_zp_g128``."""
        gran = {"tensor": "tensor", "channel": "channel"}.get(self.granularity, f"g{self.group_size}")
        return f"int{self.bits}_{'sym' if self.symmetric else 'zp'}_{gran}"


def scheme_for(bits: int, group: int, mode: str = "symmetric") -> Scheme:
    """``group`` > 0: group-wise with that size; 0: per output channel; -1: per tensor."""
    if group > 0:
        return Scheme(bits, mode, "group", group)
    return Scheme(bits, mode, "channel" if group == 0 else "tensor")


def code_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """The integer codes a scheme uses: [-(2^(b-1)-1), 2^(b-1)-1] (symmetric) or [0, 2^b - 1] (zero-point)."""
    if symmetric:
        return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return 0, 2 ** bits - 1


def qparams(x: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point over the last dimension of ``x`` (kept as size 1).

    An all-zero slice gets scale 1 (its codes are then all ``z`` and it dequantises to exact zeros).
    """
    hi = code_range(bits, symmetric)[1]
    if symmetric:
        scale = x.abs().amax(-1, keepdim=True) / hi
        zero = torch.zeros_like(scale)
    else:
        xmin = x.amin(-1, keepdim=True).clamp(max=0)
        xmax = x.amax(-1, keepdim=True).clamp(min=0)
        scale = (xmax - xmin) / hi
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zero = torch.round(-xmin / scale)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return scale, zero


def quantize_codes(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int,
                   symmetric: bool) -> torch.Tensor:
    """Integer codes (as floats) ``clamp(round(x / s) + z, lo, hi)``."""
    lo, hi = code_range(bits, symmetric)
    return torch.clamp(torch.round(x / scale) + zero, lo, hi)


def dequantize_codes(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """``s (q - z)``."""
    return scale * (codes - zero)


def _grouped(w: torch.Tensor, scheme: Scheme) -> tuple[torch.Tensor, int]:
    """``w`` (out, in) viewed as (rows, groups, g) for the scheme's granularity, and the padded width.

    A ragged last group is padded by repeating its last column, which changes neither its min nor its max.
    """
    if w.dim() != 2:
        raise ValueError(f"expected a 2-D weight (out, in), got shape {tuple(w.shape)}")
    out, inp = w.shape
    if scheme.granularity == "tensor":
        return w.reshape(1, 1, out * inp), 0
    if scheme.granularity == "channel":
        return w.reshape(out, 1, inp), 0
    g = scheme.group_size
    pad = (-inp) % g
    if pad:
        w = torch.cat([w, w[:, -1:].expand(out, pad)], dim=1)
    return w.reshape(out, (inp + pad) // g, g), pad


@dataclass
class QuantizedTensor:
    """Integer codes of a weight with their scales (and zero points); ``dequantize()`` gives ``s (q - z)``."""

    codes: torch.Tensor   # int8 (symmetric) or uint8 (zero-point), shape of the weight
    scales: torch.Tensor  # (rows, groups): (1, 1) per tensor, (out, 1) per channel, (out, ceil(in/g)) group-wise
    zeros: torch.Tensor   # same shape as scales (all zero for symmetric)
    scheme: Scheme

    def dequantize(self) -> torch.Tensor:
        inp = self.codes.shape[1]
        scheme = self.scheme
        q = self.codes.to(self.scales.dtype)
        if scheme.granularity == "tensor":
            return dequantize_codes(q, self.scales.reshape(1, 1), self.zeros.reshape(1, 1))
        if scheme.granularity == "channel":
            return dequantize_codes(q, self.scales, self.zeros)
        g = scheme.group_size
        s = self.scales.repeat_interleave(g, dim=1)[:, :inp]
        z = self.zeros.repeat_interleave(g, dim=1)[:, :inp]
        return dequantize_codes(q, s, z)

    @property
    def packed_bytes(self) -> int:
        return packed_bytes(tuple(self.codes.shape), self.scheme)


def quantize(w: torch.Tensor, scheme: Scheme) -> QuantizedTensor:
    """Round-to-nearest quantisation of a 2-D weight ``w`` (out, in) with ``scheme``."""
    w = w.detach().float()
    out, inp = w.shape
    grouped, pad = _grouped(w, scheme)
    scale, zero = qparams(grouped, scheme.bits, scheme.symmetric)
    codes = quantize_codes(grouped, scale, zero, scheme.bits, scheme.symmetric)
    codes = codes.reshape(codes.shape[0], -1)
    if scheme.granularity == "tensor":
        codes = codes.reshape(out, inp)
    elif pad:
        codes = codes[:, :inp]
    dtype = torch.int8 if scheme.symmetric else torch.uint8
    return QuantizedTensor(codes.to(dtype), scale.squeeze(-1), zero.squeeze(-1), scheme)


def fake_quantize(w: torch.Tensor, scheme: Scheme) -> torch.Tensor:
    """``dequantize(quantize(w))``: the float weight a quantised model computes with."""
    return quantize(w, scheme).dequantize().to(w.dtype)


def n_groups(in_features: int, scheme: Scheme) -> int:
    """Scale groups per row (per-tensor: counted as one per tensor elsewhere)."""
    return math.ceil(in_features / scheme.group_size) if scheme.granularity == "group" else 1


def packed_bytes(shape: tuple[int, int], scheme: Scheme, scale_bits: int = SCALE_BITS) -> int:
    """Bytes of a weight stored packed: codes at ``b`` bits, scales at ``scale_bits``, zero points at ``b``."""
    out, inp = shape
    n_params = 1 if scheme.granularity == "tensor" else out * n_groups(inp, scheme)
    bits = out * inp * scheme.bits + n_params * (scale_bits + (0 if scheme.symmetric else scheme.bits))
    return math.ceil(bits / 8)


def bits_per_weight(scheme: Scheme, in_features: int, scale_bits: int = SCALE_BITS) -> float:
    """Storage bits per weight of one row of ``in_features`` weights, scale overhead included:
    ``b + ceil(in/g) * (scale_bits [+ b for the zero point]) / in`` (group-wise; per channel g = in)."""
    extra = scale_bits + (0 if scheme.symmetric else scheme.bits)
    if scheme.granularity == "tensor":
        return float(scheme.bits)  # one scale for the whole tensor: negligible
    return scheme.bits + n_groups(in_features, scheme) * extra / in_features


def relative_error(w_hat: torch.Tensor, w: torch.Tensor) -> float:
    """``||W_hat - W||_F / ||W||_F``."""
    return float((w_hat.float() - w.float()).norm() / w.float().norm().clamp_min(1e-30))


# ----------------------------------------------------------------------------- the model

def linear_layers(model: torch.nn.Module, quantize_head: bool = False) -> dict[str, torch.nn.Linear]:
    """The ``nn.Linear`` modules to quantise, by name; the LM head (tied to the input embedding in SmolLM2)
    is left out unless ``quantize_head``."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            if module is head and not quantize_head:
                continue
            out[name] = module
    return out


@dataclass
class ModelQuantization:
    """What :func:`quantize_model` did: per-layer relative weight errors and the memory of the result."""

    scheme: Scheme
    layer_errors: dict[str, float]
    quantized_params: int
    quantized_fp32_bytes: int   # the quantised weights in float32
    quantized_bytes: int        # ... stored packed
    other_bytes: int            # everything else (embedding, norms; the head if kept) in float32
    fp32_bytes: int             # the whole model in float32 (tied weights counted once)
    weight_error: float         # sqrt(sum ||dW||^2 / sum ||W||^2) over the quantised layers
    seconds: float = 0.0

    @property
    def model_bytes(self) -> int:
        return self.quantized_bytes + self.other_bytes

    @property
    def memory_ratio(self) -> float:
        """Packed bytes of the quantised layers / their float32 bytes (about b / 32 plus the scale overhead)."""
        return self.quantized_bytes / self.quantized_fp32_bytes

    @property
    def model_memory_ratio(self) -> float:
        return self.model_bytes / self.fp32_bytes

    def summary(self) -> dict:
        return {"scheme": self.scheme.label, "weight_error": self.weight_error, "memory_ratio": self.memory_ratio,
                "model_bytes": self.model_bytes, "model_memory_ratio": self.model_memory_ratio}


def model_memory(model: torch.nn.Module, scheme: Scheme | None, quantize_head: bool = False) -> dict:
    """Memory of ``model`` with its linear layers stored packed under ``scheme`` (None: all float32)."""
    fp32 = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()) * 4
    if scheme is None:
        return {"fp32_bytes": fp32, "quantized_fp32_bytes": 0, "quantized_bytes": 0, "other_bytes": fp32}
    layers = linear_layers(model, quantize_head)
    q_fp32 = sum(m.weight.numel() * 4 for m in layers.values())
    q_bytes = sum(packed_bytes(tuple(m.weight.shape), scheme) for m in layers.values())
    return {"fp32_bytes": fp32, "quantized_fp32_bytes": q_fp32, "quantized_bytes": q_bytes,
            "other_bytes": fp32 - q_fp32}


@torch.no_grad()
def quantize_model(model: torch.nn.Module, scheme: Scheme, *, out: torch.nn.Module | None = None,
                   quantize_head: bool = False, progress: bool = False) -> tuple[torch.nn.Module, ModelQuantization]:
    """Apply RTN ``scheme`` to every linear layer of a COPY of ``model`` (never the model itself).

    ``out`` may be a copy made earlier (same architecture); its linear weights are overwritten from ``model``'s,
    so one copy serves many schemes. Returns ``(quantised copy, report)``; the report's per-layer errors are
    relative Frobenius errors of the weights. The tied embedding / LM head stays float32 unless
    ``quantize_head`` (then the input embedding, being the same tensor, is quantised as well).
    """
    start = time.perf_counter()
    if out is None:
        out = copy.deepcopy(model)
    elif out is model:
        raise ValueError("out must be a copy of the model, not the model itself (its weights would be lost)")
    src = linear_layers(model, quantize_head)
    dst = linear_layers(out, quantize_head)
    if set(src) != set(dst):
        raise ValueError("out does not have the same linear layers as model: pass a copy of the same model")
    _restore_head(model, out)
    errors, num, den = {}, 0.0, 0.0
    for name in progress_bar(src, desc=f"RTN {scheme.label}", unit="layer", disable=not progress):
        w = src[name].weight
        w_hat = fake_quantize(w, scheme)
        dst[name].weight.copy_(w_hat)
        d2, n2 = float((w_hat - w).pow(2).sum()), float(w.pow(2).sum())
        errors[name] = math.sqrt(d2 / max(n2, 1e-30))
        num, den = num + d2, den + n2
    mem = model_memory(model, scheme, quantize_head)
    report = ModelQuantization(scheme, errors, sum(m.weight.numel() for m in src.values()),
                               mem["quantized_fp32_bytes"], mem["quantized_bytes"], mem["other_bytes"],
                               mem["fp32_bytes"], math.sqrt(num / max(den, 1e-30)), time.perf_counter() - start)
    return out, report


@torch.no_grad()
def _restore_head(model: torch.nn.Module, out: torch.nn.Module) -> None:
    """Copy the LM head (and so the tied embedding) back from ``model`` into ``out``."""
    if hasattr(model, "get_output_embeddings") and model.get_output_embeddings() is not None:
        out.get_output_embeddings().weight.copy_(model.get_output_embeddings().weight)
    if hasattr(model, "get_input_embeddings"):
        out.get_input_embeddings().weight.copy_(model.get_input_embeddings().weight)


@torch.no_grad()
def restore_model(model: torch.nn.Module, out: torch.nn.Module) -> torch.nn.Module:
    """Copy every parameter of ``model`` into its copy ``out`` (undo a quantisation)."""
    for p_out, p in zip(out.parameters(), model.parameters()):
        p_out.copy_(p)
    return out


# ----------------------------------------------------------------------------- perplexity

def window_starts(n_tokens: int, window: int, stride: int) -> list[int]:
    """Starts of the sliding windows over ``n_tokens`` tokens (the last one ends at ``n_tokens``)."""
    if not 0 < stride <= window:
        raise ValueError(f"stride = {stride}: use 0 < stride <= window ({window})")
    if n_tokens < 2:
        raise ValueError("need at least 2 tokens")
    if n_tokens <= window:
        return [0]
    starts = list(range(0, n_tokens - window, stride))
    starts.append(n_tokens - window)
    return sorted(set(starts))


@torch.no_grad()
def perplexity(model: torch.nn.Module, ids: Sequence[int] | torch.Tensor, window: int = 256, stride: int = 128,
               batch_size: int = 2, progress: bool = False) -> dict:
    """Perplexity of ``ids`` with sliding windows: each window of ``window`` tokens scores only the tokens not
    scored by an earlier window, so every token but the first is scored once, with at least
    ``window - stride`` tokens of context (except in the first window).

    Returns ``{"ppl", "nll" (mean), "tokens" (scored), "windows", "forward_tokens"}``. Logits are computed only
    at the scored positions (the LM head is the largest single matrix of a small model).
    """
    ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    n = ids.numel()
    starts = window_starts(n, window, stride)
    length = min(window, n)
    device = next(model.parameters()).device
    body = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    head = model.get_output_embeddings()
    total, count, scored_upto = 0.0, 0, 0
    jobs = []
    for s in starts:
        first = max(scored_upto, s + 1)  # first target position scored by this window
        jobs.append((s, first - s))
        scored_upto = s + length
    for i in progress_bar(range(0, len(jobs), batch_size), desc="perplexity", unit="batch", disable=not progress):
        chunk = jobs[i:i + batch_size]
        x = torch.stack([ids[s:s + length] for s, _ in chunk]).to(device)
        hidden = body(input_ids=x, use_cache=False).last_hidden_state
        for row, (_, off) in enumerate(chunk):
            h = hidden[row, off - 1:length - 1]      # predicts tokens s+off .. s+length-1
            target = x[row, off:]
            logits = head(h).float()
            total += float(F.cross_entropy(logits, target, reduction="sum"))
            count += target.numel()
    nll = total / count
    return {"ppl": math.exp(nll), "nll": nll, "tokens": count, "windows": len(starts),
            "forward_tokens": len(starts) * length}


# ----------------------------------------------------------------------------- GPTQ

def gptq_quantize(w: torch.Tensor, hessian: torch.Tensor, scheme: Scheme, *, block_size: int = 128,
                  percdamp: float = 0.01, act_order: bool = False) -> QuantizedTensor:
    """GPTQ (Frantar et al. 2023, Alg. 1) of one weight ``w`` (out, in) given ``hessian`` = 2 X X^T / n (in, in).

    Columns are quantised one at a time; after each, its scaled rounding error is subtracted from the columns
    still to come (inside a lazy block of ``block_size`` columns; the rest of the matrix is updated once per
    block). Uses the upper Cholesky factor of ``(H + lambda I)^-1``, ``lambda = percdamp * mean(diag H)``.
    Inputs that never fire (zero diagonal) get ``H_jj = 1`` and a zero weight column, as in the authors' code.
    With a diagonal H (no correlations) nothing is propagated and the result is plain RTN.

    Order: left to right (the paper), each group's scale chosen from the already-updated weights when its first
    column is reached. ``act_order`` is the authors' later heuristic (``--act-order`` with ``--static-groups``
    in IST-DASLab/gptq): columns in order of decreasing ``H_jj`` (the largest inputs first, while there is
    most freedom left to compensate them), with every group's scale fixed beforehand from the original
    weights, so the stored format is unchanged.
    """
    if w.dim() != 2 or hessian.shape != (w.shape[1], w.shape[1]):
        raise ValueError(f"need w (out, in) and H (in, in); got {tuple(w.shape)} and {tuple(hessian.shape)}")
    W = w.detach().clone().float()
    H = hessian.detach().clone().float()
    out, cols = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    bits, sym = scheme.bits, scheme.symmetric
    grouped = scheme.granularity == "group"
    g = scheme.group_size if grouped else cols
    static = None
    if scheme.granularity == "tensor":
        scale, zero = qparams(W.reshape(1, -1), bits, sym)
        scale, zero = scale.expand(out, 1), zero.expand(out, 1)
    elif scheme.granularity == "channel":
        scale, zero = qparams(W, bits, sym)
    perm = torch.arange(cols, device=W.device)
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True)
        if grouped:
            static = qparams(_grouped(W, scheme)[0], bits, sym)  # (out, groups, 1) each, original weights
        W, H = W[:, perm], H[perm][:, perm]
    H += percdamp * torch.mean(torch.diag(H)) * torch.eye(cols, dtype=H.dtype, device=H.device)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)

    if grouped and static is None:
        block_size = max(g, (block_size // g) * g)  # groups never straddle a lazy block
    codes = torch.zeros_like(W)
    scales, zeros = [], []
    if static is not None:  # the scale and zero point of every (permuted) column, looked up once
        col_group = perm // g
        col_scale, col_zero = static[0][:, col_group, 0], static[1][:, col_group, 0]
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if static is not None:
                scale, zero = col_scale[:, col:col + 1], col_zero[:, col:col + 1]
            elif grouped and col % g == 0:
                scale, zero = qparams(W1[:, i:i + g], bits, sym)  # from the updated weights of this group
                scales.append(scale)
                zeros.append(zero)
            w_col = W1[:, i:i + 1]
            c = quantize_codes(w_col, scale, zero, bits, sym)
            codes[:, col:col + 1] = c
            err = (w_col - dequantize_codes(c, scale, zero)) / Hinv1[i, i]
            W1[:, i:].addmm_(err, Hinv1[i:i + 1, i:], alpha=-1.0)  # the error feedback inside the block
            Err1[:, i:i + 1] = err
        W[:, i2:].addmm_(Err1, Hinv[i1:i2, i2:], alpha=-1.0)  # the lazy update of the columns after the block
    if act_order:
        inverse = torch.argsort(perm)
        codes = codes[:, inverse]
    if static is not None:
        scale_t, zero_t = static[0].squeeze(-1), static[1].squeeze(-1)
    elif grouped:
        scale_t, zero_t = torch.cat(scales, 1), torch.cat(zeros, 1)
    elif scheme.granularity == "channel":
        scale_t, zero_t = scale, zero
    else:
        scale_t, zero_t = scale[:1], zero[:1]
    dtype = torch.int8 if sym else torch.uint8
    return QuantizedTensor(codes.to(dtype), scale_t.float(), zero_t.float(), scheme)


def output_error(w_hat: torch.Tensor, w: torch.Tensor, xtx: torch.Tensor,
                 with_reference: bool = True) -> tuple[float, float]:
    """``(||X W_hat^T - X W^T||_F, ||X W^T||_F)`` from ``X^T X`` (in, in): ||X D^T||^2 = tr(D X^T X D^T)
    (float32; the second value is NaN when ``with_reference`` is False)."""
    xtx = xtx.float()
    d = w_hat.float() - w.float()
    num = float(((d @ xtx) * d).sum().clamp_min(0))
    if not with_reference:
        return math.sqrt(num), float("nan")
    w = w.float()
    den = float(((w @ xtx) * w).sum().clamp_min(0))
    return math.sqrt(num), math.sqrt(den)


class _Stop(Exception):
    pass


@torch.no_grad()
def decoder_inputs(model: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The hidden states entering the first decoder layer and the keyword arguments the model passes to every
    layer (position embeddings, mask), captured with a forward pre-hook that stops the forward pass there."""
    layers = model.get_decoder().layers
    caught = {}

    def hook(module, args, kwargs):
        caught["hidden"] = args[0] if args else kwargs.pop("hidden_states")
        caught["kwargs"] = dict(kwargs)
        raise _Stop

    handle = layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model(input_ids=ids, use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    kwargs = {k: v for k, v in caught["kwargs"].items() if k != "hidden_states"}
    return caught["hidden"], kwargs


def _run_layer(layer, hidden, kwargs):
    out = layer(hidden, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


@dataclass
class GPTQReport:
    """Per quantised linear layer: output errors of GPTQ and RTN (same scheme), on calibration and held-out
    inputs; ``ratio`` = GPTQ / RTN on the held-out inputs."""

    scheme: Scheme
    names: list[str] = field(default_factory=list)
    gptq_calib: list[float] = field(default_factory=list)
    rtn_calib: list[float] = field(default_factory=list)
    gptq_heldout: list[float] = field(default_factory=list)
    rtn_heldout: list[float] = field(default_factory=list)
    gptq_weight: list[float] = field(default_factory=list)
    rtn_weight: list[float] = field(default_factory=list)
    layers_done: int = 0
    calib_tokens: int = 0
    heldout_tokens: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"names": list(self.names), "gptq_calib": self.gptq_calib, "rtn_calib": self.rtn_calib,
                "gptq_heldout": self.gptq_heldout, "rtn_heldout": self.rtn_heldout,
                "gptq_weight": self.gptq_weight, "rtn_weight": self.rtn_weight, "layers_done": self.layers_done,
                "calib_tokens": self.calib_tokens, "heldout_tokens": self.heldout_tokens, "seconds": self.seconds}


@torch.no_grad()
def gptq_model(model: torch.nn.Module, calib_ids: torch.Tensor, scheme: Scheme, *,
               heldout_ids: torch.Tensor | None = None, n_layers: int | None = None, block_size: int = 128,
               percdamp: float = 0.01, act_order: bool = False, progress: bool = True) -> GPTQReport:
    """Quantise the linear layers of the decoder layers of ``model`` IN PLACE with GPTQ (pass a copy).

    Sequential, as in the authors' code: the calibration batch ``calib_ids`` (B, T) is run layer by layer; the
    inputs of each layer's linears are collected with forward hooks (``H = 2 X^T X / n``), the layer is quantised,
    and its *quantised* outputs feed the next layer, so later layers see (and compensate) earlier errors.
    Linears that read the same input (q/k/v, gate/up) share H and are quantised together (GPTQ treats rows
    independently, so this equals quantising them one by one). ``n_layers`` limits the work to the first
    decoder layers (the rest stay float32). The optional ``heldout_ids`` go through the same pipeline and give
    each layer's output error on inputs GPTQ never saw; RTN is measured on exactly the same inputs.
    """
    start = time.perf_counter()
    layers = model.get_decoder().layers
    n_layers = len(layers) if n_layers is None else n_layers
    if not 1 <= n_layers <= len(layers):
        raise ValueError(f"n_layers = {n_layers}: the model has {len(layers)} decoder layers")
    if calib_ids.dim() != 2:
        raise ValueError(f"calib_ids must be a (batch, length) tensor of token ids, got shape {tuple(calib_ids.shape)}")
    report = GPTQReport(scheme, calib_tokens=int(calib_ids.numel()),
                        heldout_tokens=0 if heldout_ids is None else int(heldout_ids.numel()))
    device = next(model.parameters()).device
    streams = {"calib": decoder_inputs(model, calib_ids.to(device))}
    if heldout_ids is not None:
        streams["heldout"] = decoder_inputs(model, heldout_ids.to(device))
    for index in progress_bar(range(n_layers), desc=f"GPTQ {scheme.label}", unit="layer", disable=not progress):
        layer = layers[index]
        linears = {name: mod for name, mod in layer.named_modules() if isinstance(mod, torch.nn.Linear)}
        stats: dict[str, dict[str, torch.Tensor]] = {s: {} for s in streams}  # X^T X per stream and linear
        inputs: dict[str, dict[str, torch.Tensor]] = {s: {} for s in streams}  # X itself (for the errors)
        current = {"stream": "calib"}

        def make_hook(name, stats=stats, inputs=inputs, current=current):
            def hook(module, args, output):
                x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
                stream = current["stream"]
                stats[stream][name] = stats[stream].get(name, 0) + x.T @ x
                inputs[stream][name] = x if name not in inputs[stream] else torch.cat([inputs[stream][name], x])
            return hook

        def norm_of_outputs(d: torch.Tensor, stream: str, name: str, stats=stats, inputs=inputs) -> float:
            """||X d^T||_F, through X (n x in) or X^T X (in x in), whichever product is smaller."""
            x = inputs[stream][name]
            if x.shape[0] <= x.shape[1]:
                return float((x @ d.T).norm())
            return output_error(d, torch.zeros_like(d), stats[stream][name], with_reference=False)[0]

        handles = [mod.register_forward_hook(make_hook(name)) for name, mod in linears.items()]
        try:
            for stream, (hidden, kwargs) in streams.items():
                current["stream"] = stream
                _run_layer(layer, hidden, kwargs)
        finally:
            for h in handles:
                h.remove()
        groups: list[list[str]] = []  # linears that read the same input (equal X^T X) are quantised together
        for name in linears:
            for group in groups:
                if torch.equal(stats["calib"][group[0]], stats["calib"][name]):
                    group.append(name)
                    break
            else:
                groups.append([name])
        n_cal = report.calib_tokens
        for names in groups:
            w = torch.cat([linears[n].weight for n in names], 0)
            xtx = stats["calib"][names[0]]
            hessian = 2.0 * xtx / n_cal
            w_gptq = gptq_quantize(w, hessian, scheme, block_size=block_size, percdamp=percdamp,
                                   act_order=act_order).dequantize()
            w_rtn = fake_quantize(w.float(), scheme)
            rows = 0
            for n in names:
                mod = linears[n]
                k = mod.weight.shape[0]
                wq, wg, wr = mod.weight.detach().clone(), w_gptq[rows:rows + k], w_rtn[rows:rows + k]
                rows += k
                report.names.append(f"layers.{index}.{n}")
                for stream in stats:
                    ref = norm_of_outputs(wq, stream, n)  # ||X W^T||
                    for tag, what in (("gptq", wg), ("rtn", wr)):
                        err = norm_of_outputs(what - wq, stream, n)
                        getattr(report, f"{tag}_{stream}").append(err / max(ref, 1e-30))
                for tag, what in (("gptq", wg), ("rtn", wr)):
                    getattr(report, f"{tag}_weight").append(relative_error(what, wq))
                mod.weight.copy_(wg.to(mod.weight.dtype))
        for stream, (hidden, kwargs) in streams.items():
            streams[stream] = (_run_layer(layer, hidden, kwargs), kwargs)
        report.layers_done = index + 1
    report.seconds = time.perf_counter() - start
    return report


def rtn_layers(model: torch.nn.Module, scheme: Scheme, n_layers: int | None = None) -> None:
    """RTN on the linears of the first ``n_layers`` decoder layers of ``model`` IN PLACE (pass a copy)."""
    layers = model.get_decoder().layers
    n_layers = len(layers) if n_layers is None else n_layers
    with torch.no_grad():
        for layer in list(layers)[:n_layers]:
            for mod in layer.modules():
                if isinstance(mod, torch.nn.Linear):
                    mod.weight.copy_(fake_quantize(mod.weight, scheme))


# ----------------------------------------------------------------------------- small test problems

def correlated_inputs(n: int, dim: int, rank: int = 8, noise: float = 0.1, seed: int = 0,
                      sample_seed: int | None = None) -> torch.Tensor:
    """``n`` inputs of width ``dim`` with strongly correlated features (a low-rank signal plus noise) and a few
    large-scale features: the regime where GPTQ's error feedback pays off over RTN. ``seed`` fixes the
    distribution (basis and large features), ``sample_seed`` (default ``seed``) the samples drawn from it."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(rank, dim, generator=g)
    scale = torch.ones(dim)
    scale[torch.randperm(dim, generator=g)[: max(1, dim // 32)]] = 8.0
    gs = torch.Generator().manual_seed(seed if sample_seed is None else 10_000 + sample_seed)
    x = torch.randn(n, rank, generator=gs) @ basis + noise * torch.randn(n, dim, generator=gs)
    return x * scale
