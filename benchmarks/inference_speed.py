"""Inference-optimisation benchmarks (attention memory, KV cache, speculative decoding): see
:mod:`lionsnb.inference.benchmark`.

    python benchmarks/inference_speed.py
    python benchmarks/inference_speed.py --only kv --new-tokens 256
"""
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

from lionsnb.inference.benchmark import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:])
