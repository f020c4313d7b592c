"""The LipsLev series: certified robustness of character CNNs under bounded Levenshtein distance.

Abad Rocamora, Chrysos, Cevher, "Certified Robustness Under Bounded Levenshtein Distance", ICLR 2025
(arXiv 2501.13676); official code LIONS-EPFL/LipsLev@81d7cda (MIT).

Core modules (the method), which the four notebook modules ``nb01_levenshtein`` .. ``nb04_certify`` arrange:

* :mod:`.levenshtein`: the alphabet (tokenizer), the Levenshtein distance and edit scripts, the unique strings at
  distance 1 and their count, exact ball sizes (a counting automaton), the ERP distance of real sequences;
* :mod:`.model`: the character CNN, its Lipschitz constants M(E), M(K), M(C) and the 1-Lipschitz forward pass
  (Eq. 7), the authors' checkpoint;
* :mod:`.certify`: the certified radius of every sentence in one forward pass;
* :mod:`.bruteforce`: exact verification at distance 1 (incremental engine) and 2 (short strings);
* :mod:`.baselines`: IBP and a Charmer-style attack;
* :mod:`.train`: 1-Lipschitz training and the regularised baseline;
* :mod:`.data`: AG-News (hub or offline), the authors' checkpoint files, the synthetic ``numbers_letters`` task.
"""
from __future__ import annotations

from lionsnb.lipslev.baselines import charmer_attack, ibp_certify, robust_accuracy
from lionsnb.lipslev.bruteforce import brute_force, brute_force_many, shortest_rows
from lionsnb.lipslev.certify import Certificate, certificate, certified_accuracy, certify, predict, strict_radius
from lionsnb.lipslev.data import (
    TextSplit,
    ag_news_alphabet,
    load_ag_news,
    numbers_letters,
    official_checkpoint,
    offline_split,
)
from lionsnb.lipslev.levenshtein import (
    Alphabet,
    apply_edit,
    ball,
    ball_size,
    count_ball,
    edit_script,
    erp_distance,
    levenshtein,
    neighbour_count,
    neighbour_edits,
    neighbours,
    runs,
)
from lionsnb.lipslev.model import (
    LipsLevCNN,
    build_model,
    conv_constant,
    embedding_constant,
    head_constant,
    load_official_checkpoint,
    norm_of,
)
from lionsnb.lipslev.train import lipschitz_penalty, train

__all__ = [
    # the certificate
    "predict", "certify", "certificate", "Certificate", "certified_accuracy", "strict_radius",
    # the model and its constants
    "LipsLevCNN", "build_model", "load_official_checkpoint", "embedding_constant", "conv_constant", "head_constant",
    "norm_of",
    # the Levenshtein distance and its neighbourhoods
    "Alphabet", "levenshtein", "edit_script", "apply_edit", "runs", "neighbour_count", "neighbour_edits",
    "neighbours", "ball", "count_ball", "ball_size", "erp_distance",
    # exact verification, IBP, attack
    "brute_force", "brute_force_many", "shortest_rows", "ibp_certify", "charmer_attack", "robust_accuracy",
    # training
    "train", "lipschitz_penalty",
    # data
    "TextSplit", "load_ag_news", "offline_split", "numbers_letters", "official_checkpoint", "ag_news_alphabet",
]
