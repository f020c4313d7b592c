"""The inference-optimisation series: fast attention, KV cache and GQA, paged KV memory, quantisation,
speculative decoding (after the KDD 2024 tutorial "Inference optimization of foundation models on AI
accelerators", Park et al., arXiv 2407.09111, and the primary papers it covers).

Every technique is written from scratch here and checked against the plain version on SmolLM2-135M-Instruct
(offline, :func:`lionsnb.lm.load_causal_lm`) or on explicit small examples.
"""
from __future__ import annotations

from lionsnb.inference.llama import (  # noqa: F401
                                     Generation,
                                     KVCache,
                                     LlamaRunner,
                                     causal_mask,
                                     generate,
                                     kv_cache_bytes,
                                     naive_attention,
                                     sdpa_attention,
)
