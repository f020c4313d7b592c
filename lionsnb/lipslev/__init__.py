"""The LipsLev series: certified robustness of character CNNs under bounded Levenshtein distance.

Abad Rocamora, Chrysos, Cevher, "Certified Robustness Under Bounded Levenshtein Distance", ICLR 2025
(arXiv 2501.13676); official code LIONS-EPFL/LipsLev@81d7cda (MIT).
"""
from __future__ import annotations

from lionsnb.lipslev.certify import (Certificate, certificate, certified_accuracy, certify,  # noqa: F401
                                     predict, strict_radius)
from lionsnb.lipslev.model import (LipsLevCNN, build_model, conv_constant, embedding_constant,  # noqa: F401
                                   head_constant, load_official_checkpoint)
from lionsnb.lipslev.text import (Alphabet, apply_edit, ball, edit_script, erp_distance, levenshtein,  # noqa: F401
                                  neighbour_count, neighbour_edits, neighbours, runs)
