"""The inference-optimisation series: fast attention, KV cache and GQA, paged KV memory, quantisation,
speculative decoding (after the KDD 2024 tutorial "Inference optimization of foundation models on AI
accelerators", Park et al., arXiv 2407.09111, and the primary papers it covers).

Every technique is written from scratch here and checked against the plain version on SmolLM2-135M-Instruct
(offline, :func:`lionsnb.lm.load_causal_lm`) or on explicit small examples. Core modules:

* :mod:`.llama`: a from-scratch Llama forward pass (:class:`LlamaRunner`), its :class:`KVCache` and the decode loop
  :func:`generate`; :func:`load_model` loads the model the notebooks run on;
* :mod:`.attention`: the tiled FlashAttention forward pass (:func:`flash_attention`) and the online softmax, IO
  counts and peak-memory measurement;
* :mod:`.paged`: a paged KV cache (:class:`BlockManager`, :class:`PagedKVCache`, :func:`paged_attention`) and a
  serving simulation;
* :mod:`.quantizers`: round-to-nearest weight quantisation (:class:`Scheme`, :func:`quantize`,
  :func:`quantize_model`) and GPTQ (:func:`gptq_quantize`, :func:`gptq_model`), perplexity;
* :mod:`.speculative`: speculative decoding (:func:`speculative_generate`, the acceptance rule
  :func:`speculative_accept`, drafts :class:`ModelDraft` and :class:`PromptLookupDraft`);
* :mod:`.corpus`: the Shakespeare passages the notebooks feed the model; :mod:`.benchmark`: the benchmarks behind
  ``benchmarks/inference_speed.py``.

Each notebook ``notebooks/inference/NN_<stem>.ipynb`` is backed by its module ``nbNN_<stem>``.
"""
from __future__ import annotations

from lionsnb.inference.attention import (
    attention_memory_benchmark,
    flash_attention,
    hbm_accesses_flash,
    hbm_accesses_standard,
    online_softmax,
    online_update,
    peak_memory,
    reference_attention,
    tile_schedule,
)
from lionsnb.inference.benchmark import kv_cache_benchmark
from lionsnb.inference.corpus import passage_ids
from lionsnb.inference.llama import (
    Generation,
    KVCache,
    LlamaRunner,
    causal_mask,
    decode_speed,
    generate,
    kv_cache_bytes,
    load_model,
    naive_attention,
    sdpa_attention,
)
from lionsnb.inference.paged import (
    BlockManager,
    OutOfBlocks,
    PagedKVCache,
    PagedSequence,
    blocks_needed,
    paged_attention,
    paged_greedy,
    prefix_sharing,
    random_requests,
    simulate_serving,
)
from lionsnb.inference.quantizers import (
    QuantizedTensor,
    Scheme,
    bits_per_weight,
    fake_quantize,
    gptq_model,
    gptq_quantize,
    packed_bytes,
    perplexity,
    quantize,
    quantize_model,
)
from lionsnb.inference.speculative import (
    ModelDraft,
    PromptLookupDraft,
    SpeculativeResult,
    acceptance_probability,
    expected_speedup,
    expected_tokens_per_call,
    greedy_accept,
    residual_distribution,
    speculative_accept,
    speculative_benchmark,
    speculative_generate,
)

__all__ = [
    # the model, its KV cache and the decode loop
    "LlamaRunner", "KVCache", "Generation", "generate", "load_model", "kv_cache_bytes", "decode_speed",
    "causal_mask", "naive_attention", "sdpa_attention",
    # fast attention
    "flash_attention", "online_update", "online_softmax", "tile_schedule", "reference_attention", "peak_memory",
    "hbm_accesses_standard", "hbm_accesses_flash", "attention_memory_benchmark",
    # paged KV cache
    "BlockManager", "PagedKVCache", "PagedSequence", "OutOfBlocks", "blocks_needed", "paged_attention",
    "paged_greedy", "simulate_serving", "random_requests", "prefix_sharing",
    # quantisation: round to nearest (RTN) and GPTQ
    "Scheme", "QuantizedTensor", "quantize", "fake_quantize", "quantize_model", "gptq_quantize", "gptq_model",
    "bits_per_weight", "packed_bytes", "perplexity",
    # speculative decoding
    "speculative_generate", "speculative_accept", "greedy_accept", "residual_distribution",
    "acceptance_probability", "expected_tokens_per_call", "expected_speedup", "ModelDraft", "PromptLookupDraft",
    "SpeculativeResult", "speculative_benchmark",
    # text and benchmarks
    "passage_ids", "kv_cache_benchmark",
]
