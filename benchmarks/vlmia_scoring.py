"""VL-MIA scoring cost against the forward pass, and the speed-up of vectorising: see
:mod:`lionsnb.vlmia.benchmark`.

    python benchmarks/vlmia_scoring.py
    python benchmarks/vlmia_scoring.py --llm          # also SmolLM2-135M-Instruct (offline files)
    python benchmarks/vlmia_scoring.py --device cuda  # on a GPU
"""
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

from lionsnb.vlmia.benchmark import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:])
