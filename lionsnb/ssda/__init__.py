"""The SSDA series: semi-supervised domain adaptation for semantic segmentation with a few target labels.

Morales-Brotons, Chrysos, Tzoumas, Cevher, "The Last Mile to Supervised Performance: Semi-Supervised Domain
Adaptation for Semantic Segmentation", arXiv 2411.18728; the authors' code is ``Morales97/ssda`` (read, not
copied: it has no licence).

* :mod:`.losses`: class-weighted CE and its weights, the consistency loss, the supervised pixel contrast and its
  hard/easy anchor sampler, exactly as the authors' code computes them;
* :mod:`.teacher`: the ramped EMA teacher; :mod:`.metrics`: confusion matrix, per-class IoU, mIoU (nan-mean);
* :mod:`.augment`: weak/strong views and CutMix; :mod:`.model`: a small U-Net with a projection head;
* :mod:`.train`: the training recipe, its baselines and self-training; :mod:`.data`: the generated ShapesDA
  task, scikit-image photographs and loaders for GTA5, Synthia, Cityscapes and BDD100K from local folders.
"""
from __future__ import annotations

from lionsnb.ssda.augment import (
    SMALL_IMAGE_AUG,
    StrongAug,
    color_jitter,
    crop_flip,
    cutmix,
    cutmix_masks,
    enhance,
    gaussian_blur,
    rand_augment,
    solarize,
    strong_view,
)
from lionsnb.ssda.data import (
    CLASSES,
    IGNORE_INDEX,
    NUM_CLASSES,
    SOURCE,
    TARGET,
    DomainData,
    DomainStyle,
    SegSet,
    benchmark_problem,
    load_benchmark,
    load_real_domains,
    make_domain,
    make_shapes_da,
    photographs,
)
from lionsnb.ssda.losses import (
    class_weights,
    consistency_loss,
    pixel_contrast_loss,
    sample_anchors,
    weighted_cross_entropy,
)
from lionsnb.ssda.metrics import confusion_matrix, iou_per_class, mean_iou, pixel_accuracy
from lionsnb.ssda.model import SegNet, build_segnet, predict_proba
from lionsnb.ssda.teacher import ema_alpha, ema_update
from lionsnb.ssda.train import (
    BASELINES,
    Recipe,
    cutmix_views,
    ensemble_evaluate,
    evaluate,
    load_student,
    pseudo_label,
    pseudo_label_quality,
    recipe_for,
    self_train,
    train,
)

__all__ = [
    # losses and teacher (the spec's API)
    "consistency_loss", "weighted_cross_entropy", "class_weights", "pixel_contrast_loss", "sample_anchors",
    "ema_update", "ema_alpha",
    # metrics
    "confusion_matrix", "iou_per_class", "mean_iou", "pixel_accuracy",
    # network and recipe
    "SegNet", "build_segnet", "predict_proba", "Recipe", "BASELINES", "recipe_for", "train", "self_train",
    "pseudo_label", "pseudo_label_quality", "evaluate", "ensemble_evaluate", "load_student", "cutmix_views",
    # views
    "StrongAug", "SMALL_IMAGE_AUG", "strong_view", "rand_augment", "color_jitter", "gaussian_blur", "enhance",
    "solarize", "crop_flip", "cutmix_masks", "cutmix",
    # data
    "CLASSES", "NUM_CLASSES", "IGNORE_INDEX", "DomainStyle", "SOURCE", "TARGET", "SegSet", "DomainData",
    "make_domain", "make_shapes_da", "photographs", "load_benchmark", "load_real_domains", "benchmark_problem",
]
