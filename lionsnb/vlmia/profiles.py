"""Sizes of the tiny-VLM experiments per profile, shared by the notebooks of the series.

``smoke`` exercises every code path in seconds (the model barely memorises: its AUCs are not the claim);
``teach`` memorises the idiosyncratic tails within a few minutes on 2 CPU cores; ``full`` is the method note's
larger setting (32x32 images, 64 image embeddings, 1000 + 1000 examples) for GPU runners.
"""
from __future__ import annotations

TINY: dict[str, dict] = {
    "smoke": dict(image_size=16, n_embd=96, n_layer=2, n_members=48, n_nonmembers=48, n_pool=128, n_shifted=48,
                  pretrain_epochs=8, epochs=12, checkpoints=(0, 6), lr=3e-3, batch_size=16, max_new_tokens=16,
                  min_new_tokens=2),
    "teach": dict(image_size=16, n_embd=128, n_layer=2, n_members=128, n_nonmembers=128, n_pool=256, n_shifted=128,
                  pretrain_epochs=20, epochs=40, checkpoints=(0, 5, 10, 20, 30), lr=3e-3, batch_size=16,
                  max_new_tokens=16, min_new_tokens=2),
    "full": dict(image_size=32, n_embd=256, n_layer=4, n_members=1000, n_nonmembers=1000, n_pool=2000,
                 n_shifted=1000, pretrain_epochs=30, epochs=60, checkpoints=(0, 5, 10, 20, 30, 40), lr=1e-3,
                 batch_size=32, max_new_tokens=24, min_new_tokens=2),
}


def tiny_profiles(**extra: dict) -> dict[str, dict]:
    """The tiny-VLM sizes of every profile, each updated with ``extra[profile]`` (a notebook's own sizes)."""
    return {p: {**sizes, **extra.get(p, {})} for p, sizes in TINY.items()}
