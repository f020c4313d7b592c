"""The muP^2 series: SAM in the infinite-width limit and layerwise perturbation scaling.

Haas, Xu, Cevher, Chennuru Vankadara, "muP^2: Effective sharpness aware minimization requires layerwise
perturbation scaling", NeurIPS 2024 (arXiv 2411.00075). Uses the SAM optimizer of :mod:`lionsnb.sam` with
per-layer rho, lr and gradient-norm weights (the paper's Algorithm 1).

Core modules: :mod:`.scaling` (width exponents and factor tables), :mod:`.model` (the width MLP and CNN, per-layer
SAM groups, perturbation effects and slopes), :mod:`.sweep` (width x (lr, rho) sweeps trained as batches of
networks, and their analysis). The notebook modules ``nb01_widths`` and ``nb02_transfer`` back the two notebooks of
``notebooks/mup2/``.
"""
from __future__ import annotations

from lionsnb.mup2.model import (
    EXPECTED_SLOPES,
    SCHEMES,
    WidthCNN,
    WidthMLP,
    fit_slope,
    layerwise_step_error,
    make_sam,
    param_groups,
    perturbation_curves,
    perturbation_effects,
    perturbation_slopes,
)
from lionsnb.mup2.scaling import (
    CONVENTION,
    LAYERS,
    PARAMETERIZATIONS,
    RHO_SCALINGS,
    VARIANTS,
    LayerFactors,
    exponents,
    mup2_rho_factors,
    scaling_table,
    table_rows,
)
from lionsnb.mup2.sweep import (
    TRANSFER_SCHEMES,
    lr_optima,
    mean_loss,
    optimum,
    rho_response,
    train_grid,
    transfer_summary,
    transfer_sweep,
)

__all__ = [
    "scaling_table", "exponents", "mup2_rho_factors", "table_rows", "LayerFactors", "CONVENTION", "LAYERS",
    "PARAMETERIZATIONS", "RHO_SCALINGS", "VARIANTS", "WidthMLP", "WidthCNN", "param_groups", "make_sam",
    "perturbation_effects", "perturbation_curves", "perturbation_slopes", "fit_slope", "layerwise_step_error",
    "SCHEMES", "EXPECTED_SLOPES", "TRANSFER_SCHEMES", "train_grid", "transfer_sweep", "mean_loss", "optimum",
    "lr_optima", "transfer_summary", "rho_response",
]
