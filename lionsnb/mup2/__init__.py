"""The muP^2 series: SAM in the infinite-width limit and layerwise perturbation scaling.

Haas, Xu, Cevher, Chennuru Vankadara, "muP^2: Effective sharpness aware minimization requires
layerwise perturbation scaling", NeurIPS 2024 (arXiv 2411.00075).  Uses the SAM optimizer of
:mod:`lionsnb.sam` with per-layer rho, lr and gradient-norm weights (the paper's Algorithm 1).
"""
from __future__ import annotations

from lionsnb.mup2.model import (  # noqa: F401
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
from lionsnb.mup2.scaling import (  # noqa: F401
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
