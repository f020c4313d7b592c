"""UNCURL: forward latency of the physically shrunk MoE layer vs slot binding vs unpruned (ratios in one run);
see :mod:`lionsnb.uncurl.benchmark`.

    python benchmarks/uncurl_latency.py                          # E = 8, r = 4, d = 64
    python benchmarks/uncurl_latency.py --experts 16 --factor 4 --d-model 256 --hidden 512
"""
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

from lionsnb.uncurl.benchmark import main

if __name__ == "__main__":
    main(sys.argv[1:])
