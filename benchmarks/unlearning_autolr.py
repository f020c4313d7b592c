"""NGDiff's automatic learning rate (GeN) against a fixed learning rate, time ratio in one run: see
:mod:`lionsnb.unlearning.benchmark`.

    python benchmarks/unlearning_autolr.py                 # tiny GPT, SGD, lazy_freq 4, 3 interleaved repeats
    python benchmarks/unlearning_autolr.py --optimizer adamw --lazy-freq 1
"""
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

from lionsnb.unlearning.benchmark import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:])
