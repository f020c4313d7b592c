"""Width scaling of initialisation, learning rates and SAM perturbations (muP^2, Haas et al., NeurIPS 2024).

Convention (stated wherever a table is shown): a 3-layer MLP (input W1: n x d_in, hidden W2: n x n,
output W3: d_out x n) of width n with base width n0, and **base-width-normalised factors**: every
exponent of the author's bcd-parameterisation is applied to r = n / n0 instead of raw n.  The width
exponents are the same as in raw n; at n = n0 every factor is 1, so every parameterisation is plain SP
with plain SAM at the base width.

bcd exponents (author's convention, arXiv 2411.00075 Table D.2; L hidden layers, here L = 2):

    init   W^l ~ N(0, init_var r^{-2 b_l})           lr_l = eta r^{-c_l}
    SAM    e^l = rho r^{-d} r^{-d_l} g_l / ||(s_k g_k)_k||,   s_k = r^{-d_k}   (Algorithm 1's decoupling)

    muP:   b = (0, 1/2, 1),  c = (-1, 0, 1);          SP: b = (0, 1/2, 1/2), c = 0
    mup2 ("mpp"):  d_l = (1/2 - c_grad, 3/2 - c_grad, 3/2), d = -1/2,  c_grad = min(b_out, c_out)
    global: d_l = 0, d = 1/2;    naive: d_l = 0, d = 0
"""
from __future__ import annotations

from dataclasses import dataclass

LAYERS = ("input", "hidden", "output")
PARAMETERIZATIONS = ("sp", "mup")
#: perturbation scalings (rho per layer) and SAM variants
RHO_SCALINGS = ("naive", "global", "mup2", "mup2_independent")
VARIANTS = ("sam", "asam_elementwise", "asam_elementwise_bcd", "asam_layerwise", "sam_on")
OPTIMIZERS = ("sgd", "adam")
CONVENTION = ("3-layer MLP (input n x d_in, hidden n x n, output d_out x n), factors in r = n / n0 "
              "(base-width-normalised bcd convention: every factor is 1 at n = n0)")


@dataclass(frozen=True)
class LayerFactors:
    """Multipliers of one layer: init std (of the base-width std), lr, rho and gradient-norm weight s_l."""

    init_std: float
    lr: float
    rho: float
    gradnorm: float
    perturbed: bool = True


def exponents(parameterization: str, rho_scaling: str) -> dict[str, tuple]:
    """The bcd exponents (b, c, d_l, d) for the 3-layer MLP, and the gradient-norm exponents."""
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
    if rho_scaling not in RHO_SCALINGS:
        raise ValueError(f"rho_scaling must be one of {RHO_SCALINGS}, got {rho_scaling!r}")
    b = (0.0, 0.5, 1.0) if parameterization == "mup" else (0.0, 0.5, 0.5)
    c = (-1.0, 0.0, 1.0) if parameterization == "mup" else (0.0, 0.0, 0.0)
    c_grad = min(b[2], c[2])
    if rho_scaling.startswith("mup2"):
        d_l, d = (0.5 - c_grad, 1.5 - c_grad, 1.5), -0.5
        # Algorithm 1's denominator: s_l = r^{-d_l} by default, or the "independent" choice
        s_exp = d_l if rho_scaling == "mup2" else (-0.5, 0.0, 0.5)
    elif rho_scaling == "global":
        d_l, d, s_exp = (0.0, 0.0, 0.0), 0.5, (0.0, 0.0, 0.0)
    else:
        d_l, d, s_exp = (0.0, 0.0, 0.0), 0.0, (0.0, 0.0, 0.0)
    return {"b": b, "c": c, "d_l": d_l, "d": d, "s": s_exp}


def scaling_table(parameterization: str, variant: str = "sam", optimizer: str = "sgd", width: int = 256,
                  base_width: int = 64, rho_scaling: str | None = None) -> dict:
    """Per-layer init, lr, rho and gradient-norm factors for a width-``width`` MLP (base ``base_width``).

    ``parameterization``: ``"sp"``, ``"mup"``, or ``"mup2"`` (muP with muP^2's layerwise rho, the default
    ``rho_scaling`` for it; ``"sp"`` and ``"mup"`` default to naive rho).  ``rho_scaling`` overrides:
    naive | global | mup2 | mup2_independent.  ``variant``: sam | asam_elementwise (global rho r^{+1/2},
    derived and measured) | asam_elementwise_bcd (the author's code's rho r^{-1/2}, kept to show the
    sign matters) | asam_layerwise (T = ||W||_F) | sam_on (normalisation layers only; derived).
    ``optimizer="adam"`` gives muP-Adam learning rates (lr / fan_in, normalised) with the same rho
    factors as SGD: **derived** (SAM's ascent step does not depend on the base optimiser).
    Returns ``{"layers": {input|hidden|output: LayerFactors}, "convention": ..., "derived": [...]}``.
    """
    if width < 1 or base_width < 1:
        raise ValueError(f"width and base_width must be positive, got {width}, {base_width}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if parameterization == "mup2":
        parameterization, rho_scaling = "mup", rho_scaling or "mup2"
    rho_scaling = rho_scaling or "naive"
    if variant != "sam":
        rho_scaling = "naive"  # the ASAM / SAM-ON rules below replace the layerwise rho
    e = exponents(parameterization, rho_scaling)
    r = width / base_width
    derived = []
    layers = {}
    for i, name in enumerate(LAYERS):
        lr = r ** -e["c"][i]
        if optimizer == "adam":
            # muP-Adam: lr_l = eta / fan_in, normalised at n0: input fan_in fixed, hidden and output fan_in = n
            lr = 1.0 if (name == "input" or parameterization == "sp") else 1.0 / r
            derived.append("Adam learning rates and rho (muP-Adam lr, SGD's rho factors)")
        rho = r ** -(e["d"] + e["d_l"][i])
        gradnorm = r ** -e["s"][i] if rho_scaling.startswith("mup2") else 1.0
        perturbed = True
        if variant == "asam_elementwise":
            rho, gradnorm = r ** 0.5, 1.0
            derived.append("elementwise ASAM: global rho r^{+1/2} (derived; the author's code has r^{-1/2})")
        elif variant == "asam_elementwise_bcd":
            rho, gradnorm = r ** -0.5, 1.0
        elif variant == "asam_layerwise":
            rho = 1.0 / r if name == "hidden" else 1.0
            gradnorm = 1.0 / r if name == "hidden" else 1.0
        elif variant == "sam_on":
            rho, gradnorm, perturbed = r ** 0.5, 1.0, False
            derived.append("SAM-ON: only normalisation layers, global rho r^{+1/2} (derived, not measured)")
        layers[name] = LayerFactors(init_std=r ** -e["b"][i], lr=lr, rho=rho, gradnorm=gradnorm, perturbed=perturbed)
    return {"layers": layers, "convention": CONVENTION, "parameterization": parameterization,
            "rho_scaling": rho_scaling, "variant": variant, "optimizer": optimizer, "width": width,
            "base_width": base_width, "derived": sorted(set(derived))}


def mup2_rho_factors(ratio: float) -> tuple[float, float, float]:
    """muP^2's per-layer multipliers of the base rho for SGD at width ratio r = n / n0, from the exponents
    alone: rho_l = r^{-(d + d_l)} with d = -1/2, d_l = (-1/2, 1/2, 3/2), i.e. (r, 1, 1/r)."""
    if ratio <= 0:
        raise ValueError(f"the width ratio must be > 0, got {ratio}")
    d, d_l = -0.5, (-0.5, 0.5, 1.5)
    return tuple(float(ratio ** -(d + x)) for x in d_l)


def table_rows(table: dict) -> list[dict]:
    """The table as rows (one per layer) for display."""
    return [{"layer": name, **{k: round(v, 6) if isinstance(v, float) else v for k, v in vars(f).items()}}
            for name, f in table["layers"].items()]
