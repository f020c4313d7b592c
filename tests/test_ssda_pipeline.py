"""lionsnb.ssda metrics, data, views, CutMix, network, pseudo-labels, loaders and a short training run."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lionsnb.ssda import (
    IGNORE_INDEX,
    SegNet,
    build_segnet,
    confusion_matrix,
    crop_flip,
    cutmix,
    cutmix_masks,
    cutmix_views,
    enhance,
    iou_per_class,
    load_benchmark,
    make_domain,
    make_shapes_da,
    mean_iou,
    pseudo_label,
    pseudo_label_quality,
    recipe_for,
    solarize,
    strong_view,
    train,
)
from lionsnb.ssda.augment import SMALL_IMAGE_AUG, StrongAug, gaussian_blur
from lionsnb.ssda.data import CITYSCAPES_ID_TO_TRAIN, SYNTHIA_ID_TO_TRAIN, benchmark_problem, load_real_domains
from lionsnb.ssda.train import Recipe

# ------------------------------------------------------------------------------------------------ metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confusion_matrix_and_miou_against_sklearn(seed):
    from sklearn.metrics import confusion_matrix as sk_cm
    from sklearn.metrics import jaccard_score

    rng = np.random.default_rng(seed)
    target = rng.integers(0, 5, (3, 7, 9))
    pred = rng.integers(0, 5, (3, 7, 9))
    target[rng.random(target.shape) < 0.2] = IGNORE_INDEX
    cm = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), 5)
    keep = target != IGNORE_INDEX
    expected = sk_cm(target[keep], pred[keep], labels=range(5))
    assert np.array_equal(cm.numpy(), expected)
    iou = iou_per_class(cm)
    assert np.allclose(iou, jaccard_score(target[keep], pred[keep], labels=range(5), average=None))
    assert mean_iou(cm) == pytest.approx(np.mean(iou))


def test_miou_skips_classes_absent_from_truth_and_prediction():
    target = torch.tensor([[0, 0, 1, 1, 250, 3]])
    pred = torch.tensor([[0, 1, 1, 1, 2, 0]])
    cm = confusion_matrix(pred, target, 5)                     # class 2 only predicted on an ignored pixel
    iou = iou_per_class(cm)
    assert np.isnan(iou[2]) and np.isnan(iou[4]) and iou[3] == 0.0
    assert mean_iou(cm) == pytest.approx(np.mean([1 / 3, 2 / 3, 0.0]))
    with pytest.raises(ValueError):
        confusion_matrix(torch.tensor([7]), torch.tensor([0]), 5)


# --------------------------------------------------------------------------------------------------- data

def test_shapes_da_is_deterministic_and_budgets_are_nested():
    a = make_shapes_da(6, 20, 4, size=24, seed=3)
    b = make_shapes_da(6, 20, 4, size=24, seed=3)
    c = make_shapes_da(6, 20, 4, size=24, seed=4)
    assert torch.equal(a.source.images, b.source.images) and torch.equal(a.target_val.labels, b.target_val.labels)
    assert not torch.equal(a.source.images, c.source.images)
    assert a.source.images.shape == (6, 3, 24, 24) and a.target_train.labels.shape == (20, 24, 24)
    assert 0 <= float(a.source.images.min()) and float(a.source.images.max()) <= 1
    assert set(torch.unique(a.target_train.labels).tolist()) <= {0, 1, 2, 3}
    assert a.labelled_index(5).tolist() == a.labelled_index(10)[:5].tolist()
    assert sorted(a.labelled_index(7).tolist() + a.unlabelled_index(7).tolist()) == list(range(20))
    # image i does not depend on how many images are generated
    assert torch.equal(make_domain("target", 3, 24, 3).images, a.target_train.images[:3])
    with pytest.raises(ValueError):
        a.labelled_index(21)


def test_target_colour_cue_shifts_meaning():
    src, tgt = make_domain("source", 60, 24, 0), make_domain("target", 60, 24, 0)

    def mean_colour(s, cls):
        m = s.labels == cls
        return torch.stack([s.images[:, ch][m].mean() for ch in range(3)])

    red_src = mean_colour(src, 1)          # source disks are mostly red
    red_tgt = mean_colour(tgt, 3)          # target triangles are mostly red
    assert int(red_src.argmax()) == 0 and int(red_tgt.argmax()) == 0
    assert int(mean_colour(tgt, 1).argmax()) != 0


# -------------------------------------------------------------------------------------------------- views

def _pil(img: torch.Tensor):
    from PIL import Image

    arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr), torch.from_numpy(arr).permute(2, 0, 1).double() / 255


@pytest.mark.parametrize("op", ["brightness", "color", "contrast", "sharpness"])
def test_enhance_matches_pil(op):
    from PIL import ImageEnhance

    img = make_domain("target", 1, 24, 5).images[0]
    pil, x = _pil(img)
    cls = {"brightness": ImageEnhance.Brightness, "color": ImageEnhance.Color,
           "contrast": ImageEnhance.Contrast, "sharpness": ImageEnhance.Sharpness}[op]
    for factor in (0.14, 0.59, 1.3):
        ref = torch.from_numpy(np.asarray(cls(pil).enhance(factor))).permute(2, 0, 1).double() / 255
        got = enhance(x, op, factor)
        # PIL works in 8 bits (and rounds the grey level of contrast): agree to a few levels
        tol = 3.5 / 255 if op == "contrast" else 1.5 / 255
        assert float((got - ref).abs().max()) <= tol, (op, factor)


def test_solarize_matches_pil():
    from PIL import ImageOps

    img = make_domain("source", 1, 24, 1).images[0]
    pil, x = _pil(img)
    for v in (1, 5, 9):
        threshold = 256 - int(25.6 * v)
        ref = torch.from_numpy(np.asarray(ImageOps.solarize(pil, threshold))).permute(2, 0, 1).double() / 255
        assert float((solarize(x, threshold / 255) - ref).abs().max()) <= 1e-9


def test_strong_view_is_pixel_aligned_and_random_per_image(monkeypatch):
    import lionsnb.ssda.augment as augment

    gen = torch.Generator().manual_seed(0)
    data = make_domain("target", 8, 24, 0)
    weak, labels = crop_flip(data.images, data.labels, None, gen)
    flipped = [i for i in range(8) if not torch.equal(weak[i], data.images[i])]
    assert flipped and all(torch.equal(labels[i], data.labels[i].flip(-1)) for i in flipped)
    cfg = StrongAug(blur_prob=0.0)                               # colour operations only: pointwise
    strong = strong_view(weak, cfg, gen)
    assert strong.shape == weak.shape and float(strong.min()) >= 0 and float(strong.max()) <= 1
    assert not torch.equal(strong, weak)
    # without blur and sharpness every op is pointwise: equal weak pixels stay equal, so nothing moves
    monkeypatch.setattr(augment, "OPS", ("brightness", "color", "contrast", "solarize"))
    one = torch.zeros(1, 3, 8, 8)
    one[..., 2:4, 5:7] = 0.8
    out = strong_view(one.repeat(4, 1, 1, 1), StrongAug(blur_prob=0.0, n_ops=2), gen)
    for img in out:
        inside, outside = img[:, 2:4, 5:7].reshape(3, -1), torch.cat([img[:, :2].reshape(3, -1),
                                                                     img[:, 4:].reshape(3, -1)], 1)
        assert torch.allclose(inside, inside[:, :1].expand_as(inside), atol=1e-6)
        assert torch.allclose(outside, outside[:, :1].expand_as(outside), atol=1e-6)
    blurred = strong_view(weak, SMALL_IMAGE_AUG, torch.Generator().manual_seed(1))
    assert blurred.shape == weak.shape


def test_gaussian_blur_batch_equals_per_image():
    x = make_domain("target", 3, 24, 2).images.double()
    sizes, sigmas = torch.tensor([3, 5, 9]), torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    batch = gaussian_blur(x, sizes, sigmas)
    for i in range(3):
        single = gaussian_blur(x[i], int(sizes[i]), float(sigmas[i]))
        assert torch.allclose(batch[i], single, atol=1e-12)
    assert torch.allclose(batch.mean(), x.mean(), atol=1e-2)


def test_cutmix_box_is_a_quarter_and_mixes_teacher_logits_with_the_student_mask():
    gen = torch.Generator().manual_seed(0)
    masks = cutmix_masks(6, 24, 24, generator=gen)
    assert masks.shape == (3, 1, 24, 24)
    for m in masks:
        area = float(m.sum())
        assert abs(area - 0.25 * 24 * 24) <= 24, area                    # 25 % up to rounding of the box sides
        rows, cols = torch.nonzero(m[0], as_tuple=True)
        assert area == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)    # one box
    x = torch.arange(6.0)[:, None, None, None].expand(6, 3, 24, 24)
    mixed = cutmix(x, masks)
    for i in range(3):
        inside = masks[i, 0].bool()
        assert torch.all(mixed[i][:, inside] == i + 3) and torch.all(mixed[i][:, ~inside] == i)
        assert torch.all(mixed[i + 3][:, inside] == i) and torch.all(mixed[i + 3][:, ~inside] == i + 3)
    # with an identity "teacher", the mixed teacher logits are the student's input mixed by the same masks
    weak = torch.rand(6, 3, 24, 24, generator=gen)
    student_in, teacher_logits = cutmix_views(nn.Identity(), weak, weak.clone(), masks)
    assert torch.equal(student_in, teacher_logits)
    assert torch.equal(teacher_logits, cutmix(weak, masks)) and not torch.equal(teacher_logits, weak)
    with pytest.raises(ValueError):
        cutmix_masks(5, 8, 8)


# ----------------------------------------------------------------------------------- network, pseudo-labels

def test_segnet_shapes_and_embeddings():
    for widths in ((8, 16), (8, 16, 32)):
        net = build_segnet(4, widths, 16, "batch", seed=0)
        logits, z = net(torch.rand(2, 3, 24, 24), with_embedding=True)
        assert logits.shape == (2, 4, 24, 24) and z.shape == (2, 16, 24, 24)
        norms = z.norm(dim=1)
        assert float(norms.max()) <= 1 + 1e-6 and float(norms.min()) > 0.3      # unit at grid points, below between
    assert torch.equal(build_segnet(seed=3).classifier.weight, build_segnet(seed=3).classifier.weight)
    with pytest.raises(ValueError):
        SegNet(widths=(8, 16, 32))(torch.rand(1, 3, 22, 22))


def test_pseudo_labels_keep_exactly_the_confident_pixels():
    class Fixed(nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = logits
            self.p = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return self.logits

    logits = torch.tensor([[[[5.0, 0.0]], [[0.0, 0.0]]]])          # pixel 0: p = 0.993, pixel 1: p = 0.5
    pl = pseudo_label(Fixed(logits), torch.zeros(1, 3, 1, 2), threshold=0.9)
    assert pl.tolist() == [[[0, IGNORE_INDEX]]]
    pl = pseudo_label(Fixed(logits), torch.zeros(1, 3, 1, 2), threshold=0.5)   # a tie at tau is dropped
    assert pl.tolist() == [[[0, IGNORE_INDEX]]]
    probs = torch.softmax(logits, 1)
    q = pseudo_label_quality(probs, torch.tensor([[[0, 1]]]), [0.0, 0.9, 0.999])
    assert q["coverage"] == [1.0, 0.5, 0.0] and q["accuracy"][1] == 1.0 and np.isnan(q["accuracy"][2])


# ------------------------------------------------------------------------------------------------ loaders

def _png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_benchmark_loaders_from_local_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("LIONSNB_DATA", str(tmp_path))
    assert "no cityscapes data" in benchmark_problem("cityscapes")
    with pytest.raises(FileNotFoundError, match="leftImg8bit"):
        load_benchmark("cityscapes")
    rgb = np.full((8, 16, 3), 128, dtype=np.uint8)
    ids = np.zeros((8, 16), dtype=np.uint8)
    ids[:, :8] = 7                                   # road -> 0
    ids[:, 8:] = 26                                  # car -> 13
    ids[0, 0] = 1                                    # ego vehicle -> ignored
    _png(tmp_path / "cityscapes/leftImg8bit/train/aachen/a_000001_leftImg8bit.png", rgb)
    _png(tmp_path / "cityscapes/gtFine/train/aachen/a_000001_gtFine_labelIds.png", ids)
    _png(tmp_path / "gta5/images/00001.png", rgb)
    _png(tmp_path / "gta5/labels/00001.png", ids)
    bdd = np.full((8, 16), 255, dtype=np.uint8)
    bdd[4:] = 10
    _png(tmp_path / "bdd/images/10k/train/x.jpg", rgb)
    _png(tmp_path / "bdd/labels/sem_seg/masks/train/x.png", bdd)
    assert benchmark_problem("cityscapes") is None
    cs = load_benchmark("cityscapes", size=(4, 8))
    assert cs.images.shape == (1, 3, 4, 8) and abs(float(cs.images.mean()) - 128 / 255) < 1e-6
    assert set(torch.unique(cs.labels).tolist()) <= {0, 13, IGNORE_INDEX} and int(cs.labels[0, 0, 0]) in (0, 250)
    assert int(cs.labels[0, 2, 1]) == 0 and int(cs.labels[0, 2, 6]) == 13
    b = load_benchmark("bdd", size=(8, 16))
    assert int(b.labels[0, 0, 0]) == IGNORE_INDEX and int(b.labels[0, 5, 0]) == 10
    with pytest.raises(FileNotFoundError, match="val"):
        load_real_domains("gta5", "cityscapes", size=(4, 8))      # no val split yet
    assert CITYSCAPES_ID_TO_TRAIN[33] == 18 and SYNTHIA_ID_TO_TRAIN[3] == 0 and len(SYNTHIA_ID_TO_TRAIN) == 19


# ----------------------------------------------------------------------------------------------- training

def test_short_training_runs_every_component_and_is_deterministic():
    data = make_shapes_da(16, 24, 8, size=16, seed=0)
    recipe = recipe_for("ssda", Recipe(steps=4, batch_size=2, warmup=0.25, pc_max_views=8, pc_max_samples=64))
    a = train(data, 6, recipe, seed=1)
    b = train(data, 6, recipe, seed=1)
    h = a["history"]
    assert torch.isfinite(h["loss"]).all() and torch.isfinite(h["cr"]).all()
    assert torch.isfinite(h["ce_source"]).all() and torch.isfinite(h["ce_target"]).all()
    assert torch.isfinite(h["pc"][1:]).any(), "pixel contrast runs after the warm-up"
    assert h["alpha"].tolist() == pytest.approx([(t + 1) / (t + 10) for t in range(4)])
    assert torch.equal(a["cm"], b["cm"]) and torch.equal(h["loss"], b["history"]["loss"])
    assert a["cm"].sum() == 8 * 16 * 16 and 0 <= a["miou"] <= 1
    fused = train(data, 6, recipe.replace(fused=True, teacher_bn="train"), seed=1)   # mixed-batch BN, train-mode
    assert torch.isfinite(fused["history"]["loss"]).all()                              # teacher (paper-faithful)
    assert not torch.equal(fused["history"]["loss"], h["loss"])
    uda = train(data, 0, recipe, seed=1)                          # no labels: no target CE, no contrast
    assert torch.isnan(uda["history"]["ce_target"]).all() and torch.isnan(uda["history"]["pc"]).all()
    with pytest.raises(ValueError):
        train(data, 0, recipe_for("target_only", recipe), seed=0)


def test_nesterov_sgd_matches_torch():
    from lionsnb.ssda.train import NesterovSGD

    torch.manual_seed(0)
    a, b = nn.Linear(4, 3).double(), nn.Linear(4, 3).double()
    b.load_state_dict(a.state_dict())
    ours = NesterovSGD(a.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    ref = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    x = torch.randn(8, 4, dtype=torch.float64)
    for step in range(4):
        for model, opt in ((a, ours), (b, ref)):
            opt.zero_grad()
            model(x + step).pow(2).sum().backward()
            opt.step()
        if step == 1:
            ours.param_groups[0]["lr"] *= 0.1
            ref.param_groups[0]["lr"] *= 0.1
    assert torch.allclose(a.weight, b.weight, atol=1e-12) and torch.allclose(a.bias, b.bias, atol=1e-12)
