"""LipsLev certificate vs exact brute force at distance 1 on 100 AG-News sentences (:mod:`lionsnb.lipslev.benchmark`).

    python benchmarks/lipslev_speed.py                # 100 sentences, prints the ratio
    python benchmarks/lipslev_speed.py --n 20 --full-engine 3
"""
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

from lionsnb.lipslev.benchmark import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:])
