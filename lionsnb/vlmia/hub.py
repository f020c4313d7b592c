"""Loaders for the authors' benchmark on the Hugging Face hub (network needed; never used offline).

* ``JaineLi/VL-MIA-image``: subsets ``img_Flickr`` (600 images: 300 MS-COCO members, 300 Flickr uploads after
  2024-01-01) and ``img_dalle`` (592: LAION-CCS members and DALL-E 2 regenerations); columns ``image``,
  ``label`` (1 = member).
* ``JaineLi/VL-MIA-text``: subsets ``llava_v15_gpt_text`` and ``minigpt4_stage2_text``, splits ``length_16``,
  ``length_32``, ``length_64``; columns ``input``, ``label`` (1 = seen in instruction tuning).

Both need the ``datasets`` package and network access; offline they raise
:class:`lionsnb.datasets.DatasetUnavailable` with what to do.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from lionsnb.datasets import DatasetUnavailable

__all__ = ["VLMIA_IMAGE_ID", "VLMIA_TEXT_ID", "IMAGE_SUBSETS", "TEXT_SUBSETS", "TEXT_LENGTHS", "load_vlmia_images",
           "load_vlmia_texts"]

VLMIA_IMAGE_ID = "JaineLi/VL-MIA-image"
VLMIA_TEXT_ID = "JaineLi/VL-MIA-text"
IMAGE_SUBSETS = ("img_Flickr", "img_dalle")
TEXT_SUBSETS = ("llava_v15_gpt_text", "minigpt4_stage2_text")
TEXT_LENGTHS = (16, 32, 64)


def _load_dataset(repo: str, subset: str, split: str) -> Any:
    try:
        import datasets
    except ImportError:
        raise DatasetUnavailable(f"{repo} needs the `datasets` package and network access: pip install datasets, "
                                 "then run with access to huggingface.co (the offline profiles use generated data "
                                 "instead)") from None
    try:
        return datasets.load_dataset(repo, subset, split=split)
    except Exception as err:  # ConnectionError, OfflineModeIsEnabled, FileNotFoundError, ... depend on the version
        raise DatasetUnavailable(f"could not load {repo} (subset {subset!r}, split {split!r}): {type(err).__name__}: "
                                 f"{err}. It is downloaded from huggingface.co: check the network (and that "
                                 "HF_HUB_OFFLINE/HF_DATASETS_OFFLINE are unset), or use the offline profiles, "
                                 "which use generated data.") from err


def load_vlmia_images(subset: str = "img_Flickr", split: str = "train") -> tuple[list, np.ndarray]:
    """``(images, labels)`` of VL-MIA/Flickr or VL-MIA/DALL-E: PIL images and 1 = member."""
    if subset not in IMAGE_SUBSETS:
        raise ValueError(f"subset={subset!r}: choose one of {IMAGE_SUBSETS}")
    ds = _load_dataset(VLMIA_IMAGE_ID, subset, split)
    return list(ds["image"]), np.asarray(ds["label"], dtype=np.int64)


def load_vlmia_texts(subset: str = "llava_v15_gpt_text", length: int = 32) -> tuple[list[str], np.ndarray]:
    """``(texts, labels)`` of VL-MIA/Text at a fixed token length (16, 32 or 64); 1 = member."""
    if subset not in TEXT_SUBSETS:
        raise ValueError(f"subset={subset!r}: choose one of {TEXT_SUBSETS}")
    if length not in TEXT_LENGTHS:
        raise ValueError(f"length={length}: choose one of {TEXT_LENGTHS}")
    ds = _load_dataset(VLMIA_TEXT_ID, subset, f"length_{length}")
    return [str(t) for t in ds["input"]], np.asarray(ds["label"], dtype=np.int64)
