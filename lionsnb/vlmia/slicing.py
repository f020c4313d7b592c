"""The official slice rule of VL-MIA (``run_with_img.py#L261-L266`` of LIONS-EPFL/VL-MIA@859bc99).

The inference sequence is [prompt prefix][image embeddings][instruction][description]. The prompt is tokenised as
chunks split at ``<image>``, each chunk starting with BOS; the sequence keeps the first chunk whole, then the N
image embeddings, then every later chunk without its BOS. With c0 = len(chunk 0), cL = len(last chunk) (both
counting their BOS), N image embeddings and Ld = len(description tokens), S = c0 + N + cL - 1 is the sequence
length and::

    img       = [c0, c0 + N)
    inst_desp = [c0 + N, S)
    inst      = [c0 + N, S - Ld)
    desp      = [S - Ld, S)
"""
from __future__ import annotations

from collections.abc import Sequence

__all__ = ["slices", "SLICE_NAMES", "sequence_length"]

#: Slice names in the paper's table order.
SLICE_NAMES: tuple[str, ...] = ("img", "inst", "desp", "inst_desp")


def sequence_length(chunk_lengths: Sequence[int], n_image: int) -> int:
    """S = c0 + N + cL - 1 for a prompt with one ``<image>`` (two chunks, each counting its BOS)."""
    return slices(chunk_lengths, n_image, 0)["inst_desp"].stop


def slices(chunk_lengths: Sequence[int], n_image: int, desc_len: int) -> dict[str, slice]:
    """The official slices ``img``, ``inst``, ``desp``, ``inst_desp`` as Python slices of the sequence positions.

    ``chunk_lengths``: token counts of the prompt's chunks split at ``<image>`` (exactly two: before and after
    the image; each count includes the chunk's BOS; the last chunk holds instruction and description).
    ``n_image``: number of image embeddings N (576 for LLaVA-1.5, 32 for MiniGPT-4, 16 for the tiny VLM); with
    N = 0 (a model without image tokens in the sequence, e.g. LLaMA-Adapter) there is no ``img`` slice.
    ``desc_len``: Ld, the number of description tokens (tokenised without special tokens).
    """
    chunks = [int(c) for c in chunk_lengths]
    if len(chunks) != 2:
        raise ValueError(f"the slice rule needs the prompt split at its single <image> into exactly 2 chunks, got "
                         f"{len(chunks)} chunk lengths {chunks}; for a model without image tokens split where the "
                         "image would be and pass n_image=0")
    c0, c_last = chunks
    if c0 < 1 or c_last < 1:
        raise ValueError(f"each chunk counts its BOS, so chunk lengths are >= 1; got {chunks}")
    if n_image < 0 or desc_len < 0:
        raise ValueError(f"n_image and desc_len must be >= 0, got {n_image} and {desc_len}")
    if desc_len > c_last - 1:
        raise ValueError(f"the description ({desc_len} tokens) must fit in the last chunk ({c_last} tokens including "
                         "its BOS): count the description inside the last chunk")
    s = c0 + n_image + c_last - 1
    out = {"img": slice(c0, c0 + n_image), "inst": slice(c0 + n_image, s - desc_len),
           "desp": slice(s - desc_len, s), "inst_desp": slice(c0 + n_image, s)}
    if n_image == 0:
        del out["img"]
    return out
