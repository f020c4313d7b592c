"""The LipsLev series: certified robustness of character CNNs under bounded Levenshtein distance.

Abad Rocamora, Chrysos, Cevher, "Certified Robustness Under Bounded Levenshtein Distance", ICLR 2025
(arXiv 2501.13676); official code LIONS-EPFL/LipsLev@81d7cda (MIT).
"""
from __future__ import annotations

from lionsnb.lipslev.certify import Certificate, certificate, certified_accuracy, certify, predict, strict_radius  # noqa: F401
from lionsnb.lipslev.model import (  # noqa: F401
                                     LipsLevCNN,
                                     build_model,
                                     conv_constant,
                                     embedding_constant,
                                     head_constant,
                                     load_official_checkpoint,
)
from lionsnb.lipslev.text import (  # noqa: F401
                                     Alphabet,
                                     apply_edit,
                                     ball,
                                     edit_script,
                                     erp_distance,
                                     levenshtein,
                                     neighbour_count,
                                     neighbour_edits,
                                     neighbours,
                                     runs,
)
