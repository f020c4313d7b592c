"""Per-step wall clock of SGD, SAM and SAMPa (each gradient backend): see :mod:`lionsnb.sam.benchmark`.

    python benchmarks/sam_step.py --device cpu --model mlp --width 512 --batch 256 --steps 30 --warmup 5
    python benchmarks/sam_step.py --help
"""
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported

from lionsnb.sam.benchmark import main  # noqa: E402

if __name__ == "__main__":
    main(sys.argv[1:])
