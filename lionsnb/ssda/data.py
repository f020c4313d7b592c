"""ShapesDA: a generated two-domain segmentation set (source "rendered", target "real"), photographs from
scikit-image, and loaders for the real SSDA benchmarks (GTA5, Synthia, Cityscapes, BDD100K) from local folders.

ShapesDA (deterministic from a seed, NumPy only) has 4 classes: 0 background, 1 disk, 2 square, 3 triangle.
Each image holds 2-4 instances with random size, position and z-order; the label map follows the z-order. Every
class carries two cues: a **texture** that keeps its meaning across domains (disk: a checkerboard, square:
horizontal stripes, triangle: vertical stripes) and a **colour** whose meaning shifts. (A small network
learns textures and colours within a few hundred steps; shape alone it does not.)

* **Source** (the GTA5 analogue): a flat grey background, flat object colours with a crisp texture (period 4
  pixels, contrast 0.5), light noise, sharp edges. Colour is a *spurious but predictive* cue: with probability
  0.85 a disk is red, a square green, a triangle blue (else a random palette colour).
* **Target** (the Cityscapes analogue): the same classes in another style. A textured background (low-frequency
  colour noise plus stripes of period 8-14 pixels), shaded objects with a weaker texture (contrast 0.15-0.45,
  period 3.5-5.5), an illumination gradient, a gamma and contrast shift, blur, sensor noise, slightly larger
  objects, and a colour cue **whose meaning shifts**: with probability 0.5 a disk is green, a square blue and a
  triangle red (else a random colour). A model that learnt "red means disk" on the source calls the target's
  red triangles disks.

The labelled target subset of a budget N is the first N images of a seeded permutation of the target training
images, so budgets are nested (5 of 10 of 25 of 50), as the paper re-derives its split from one seed.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

CLASSES = ("background", "disk", "square", "triangle")
NUM_CLASSES = len(CLASSES)
#: the ignore index of the authors' code (pixels without a label, or below the pseudo-label threshold)
IGNORE_INDEX = 250
#: display colours of the classes (overlays), with grey for ignored pixels
CLASS_COLOURS = np.array([[0.15, 0.15, 0.15], [0.95, 0.55, 0.1], [0.2, 0.7, 0.95], [0.85, 0.25, 0.85]])
IGNORE_COLOUR = np.array([0.55, 0.55, 0.55])
#: the object palette: red, green, blue, yellow, magenta, cyan
PALETTE = np.array([[0.85, 0.2, 0.2], [0.2, 0.75, 0.25], [0.2, 0.35, 0.9],
                    [0.9, 0.85, 0.2], [0.8, 0.25, 0.8], [0.2, 0.8, 0.85]])
PALETTE_NAMES = ("red", "green", "blue", "yellow", "magenta", "cyan")


@dataclass(frozen=True)
class DomainStyle:
    """How one domain renders a scene (sizes are fractions of the image side)."""

    name: str
    cue: tuple[int, int, int]            # palette index of disk, square, triangle when the cue holds
    cue_prob: float                      # probability that an instance follows the cue (else a random colour)
    radius: tuple[float, float]          # instance "radius" range, fraction of the side
    textured: bool                       # textured background and shaded objects
    blur: float                          # Gaussian blur sigma, fraction of the side (0: sharp)
    noise: float                         # sensor noise std
    gamma: tuple[float, float]           # gamma range (1, 1: none)
    contrast: tuple[float, float]        # contrast factor range
    illumination: float                  # strength of a linear illumination gradient
    texture: tuple[float, float] = (0.0, 0.0)  # contrast range of the class texture (0: flat objects)
    period: tuple[float, float] = (4.0, 4.0)   # period range of the class texture, in pixels
    colour_jitter: float = 0.06          # per-channel jitter of object colours
    code: int = 0                        # seed stream of the domain


SOURCE = DomainStyle("source", cue=(0, 1, 2), cue_prob=0.85, radius=(0.18, 0.3), textured=False, blur=0.0,
                     noise=0.02, gamma=(1.0, 1.0), contrast=(1.0, 1.0), illumination=0.0, texture=(0.5, 0.5),
                     period=(4.0, 4.0), colour_jitter=0.06, code=1)
TARGET = DomainStyle("target", cue=(1, 2, 0), cue_prob=0.5, radius=(0.2, 0.32), textured=True, blur=0.012,
                     noise=0.05, gamma=(0.7, 1.4), contrast=(0.6, 1.0), illumination=0.35, texture=(0.15, 0.45),
                     period=(3.5, 5.5), colour_jitter=0.12, code=2)
STYLES = {"source": SOURCE, "target": TARGET}


@dataclass
class SegSet:
    """Images ``[N, 3, H, W]`` (float32 in [0, 1]) and label maps ``[N, H, W]`` (int64) of one domain."""

    images: torch.Tensor
    labels: torch.Tensor
    name: str

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: Sequence[int] | torch.Tensor, name: str | None = None) -> SegSet:
        index = torch.as_tensor(index, dtype=torch.long)
        return SegSet(self.images[index], self.labels[index], name or self.name)

    def __repr__(self) -> str:
        return f"SegSet({self.name}: {len(self)} images of {tuple(self.images.shape[1:])})"


@dataclass
class DomainData:
    """A source set, the target training images (labels used only for the budget and for evaluation of
    pseudo-labels) and a target validation set, plus the seeded order that defines labelled subsets."""

    source: SegSet
    target_train: SegSet
    target_val: SegSet
    order: torch.Tensor = field(default=None)  # permutation of the target training images
    num_classes: int = NUM_CLASSES
    class_names: tuple[str, ...] = CLASSES

    def labelled_index(self, n_labels: int) -> torch.Tensor:
        """Indices of the first ``n_labels`` target images of the seeded permutation (nested budgets)."""
        if not 0 <= n_labels <= len(self.target_train):
            raise ValueError(f"n_labels={n_labels}: use 0..{len(self.target_train)} (the target training images).")
        return self.order[:n_labels]

    def unlabelled_index(self, n_labels: int) -> torch.Tensor:
        """The remaining target training images (used without labels)."""
        return self.order[n_labels:]


# --------------------------------------------------------------------------------------------- rendering
def _shape_mask(kind: int, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float, flip: bool) -> np.ndarray:
    if kind == 1:    # disk, area pi r^2
        return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    if kind == 2:    # axis-aligned square of side 1.7 r (area 2.9 r^2)
        h = 0.85 * r
        return (np.abs(yy - cy) <= h) & (np.abs(xx - cx) <= h)
    # isosceles triangle, base = height = 2.4 r (area 2.9 r^2), apex up or down
    h = 1.2 * r
    t = (yy - (cy - h)) / (2 * h)          # 0 at the apex row, 1 at the base row (apex up)
    if flip:
        t = 1.0 - t
    return (t >= 0) & (t <= 1) & (np.abs(xx - cx) <= t * h)


def _low_frequency(rng: np.random.Generator, size: int, cells: int, channels: int) -> np.ndarray:
    """Smooth noise: a coarse random grid upsampled bilinearly to ``size``."""
    grid = rng.random((channels, cells + 1, cells + 1))
    pos = np.linspace(0, cells, size)
    i0 = np.minimum(pos.astype(int), cells - 1)
    f = pos - i0
    rows = grid[:, i0, :] * (1 - f)[None, :, None] + grid[:, i0 + 1, :] * f[None, :, None]
    return rows[:, :, i0] * (1 - f)[None, None, :] + rows[:, :, i0 + 1] * f[None, None, :]


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return image
    radius = max(1, int(round(3 * sigma)))
    x = np.arange(-radius, radius + 1)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(image, ((0, 0), (radius, radius), (radius, radius)), mode="reflect")
    tmp = sum(k[i] * pad[:, :, i:i + image.shape[2]] for i in range(len(k)))
    return sum(k[i] * tmp[:, i:i + image.shape[1], :] for i in range(len(k)))


def render_scene(rng: np.random.Generator, style: DomainStyle, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """One image ``[3, size, size]`` in [0, 1] and its label map ``[size, size]`` in the given style."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    label = np.zeros((size, size), dtype=np.int64)
    if style.textured:
        base = 0.25 + 0.5 * rng.random(3) * np.array([0.8, 0.8, 0.8])
        smooth = _low_frequency(rng, size, 3, 3)
        angle, freq = rng.uniform(0, np.pi), 2 * np.pi / rng.uniform(8.0, 14.0)
        stripes = np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy) + rng.uniform(0, 2 * np.pi))
        image = base[:, None, None] * (0.6 + 0.6 * smooth) + 0.12 * stripes[None]
    else:
        image = np.full((3, size, size), rng.uniform(0.42, 0.58))
    n_inst = int(rng.integers(2, 5))
    for _ in range(n_inst):
        kind = int(rng.integers(1, NUM_CLASSES))
        r = rng.uniform(*style.radius) * size
        cy, cx = rng.uniform(0.5 * r, size - 0.5 * r, size=2)
        mask = _shape_mask(kind, yy, xx, cy, cx, r, bool(rng.integers(0, 2)))
        colour_id = style.cue[kind - 1] if rng.random() < style.cue_prob else int(rng.integers(0, len(PALETTE)))
        colour = np.clip(PALETTE[colour_id] + rng.normal(0, style.colour_jitter, 3), 0, 1)
        amp = rng.uniform(*style.texture)
        if amp > 0:
            period = rng.uniform(*style.period)
            phase = rng.uniform(0, period, 2)
            u, v = (xx + phase[0]) * 2 * np.pi / period, (yy + phase[1]) * 2 * np.pi / period
            pattern = {1: np.sign(np.sin(u) * np.sin(v)), 2: np.sign(np.sin(v)), 3: np.sign(np.sin(u))}[kind]
            colour = colour[:, None, None] * (1 + amp * pattern)[None]
        else:
            colour = colour[:, None, None]
        if style.textured:
            shade = 0.75 + 0.45 * _low_frequency(rng, size, 2, 1)
            fill = colour * shade
        else:
            fill = np.broadcast_to(colour, image.shape)
        image = np.where(mask[None], fill, image)
        label[mask] = kind
    if style.illumination > 0:
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(angle) * (xx - size / 2) + np.sin(angle) * (yy - size / 2)) / size
        image = image * (1 + 2 * style.illumination * ramp)[None]
    image = _blur(image, style.blur * size)
    c = rng.uniform(*style.contrast)
    image = 0.5 + c * (image - 0.5)
    image = np.clip(image, 0, 1) ** rng.uniform(*style.gamma)
    image = image + rng.normal(0, style.noise, image.shape)
    return np.clip(image, 0, 1).astype(np.float32), label


def make_domain(style: DomainStyle | str, n: int, size: int = 32, seed: int = 0, start: int = 0) -> SegSet:
    """``n`` scenes of a domain; image ``i`` depends only on (seed, domain, start + i)."""
    style = STYLES[style] if isinstance(style, str) else style
    if size < 16 or size % 4:
        raise ValueError(f"size={size}: use a multiple of 4, at least 16 (the network halves it twice).")
    images = np.empty((n, 3, size, size), dtype=np.float32)
    labels = np.empty((n, size, size), dtype=np.int64)
    for i in range(n):
        rng = np.random.default_rng((seed, style.code, start + i))
        images[i], labels[i] = render_scene(rng, style, size)
    return SegSet(torch.from_numpy(images), torch.from_numpy(labels), style.name)


def make_shapes_da(n_source: int = 400, n_target: int = 300, n_val: int = 100, size: int = 32,
                   seed: int = 0, source_style: DomainStyle = SOURCE, target_style: DomainStyle = TARGET
                   ) -> DomainData:
    """The ShapesDA task: source scenes, target training scenes (a labelled budget is a prefix of a seeded
    permutation) and held-out target validation scenes."""
    source = make_domain(source_style, n_source, size, seed)
    target = make_domain(target_style, n_target + n_val, size, seed)
    train = target.subset(range(n_target), "target train")
    val = target.subset(range(n_target, n_target + n_val), "target val")
    order = torch.from_numpy(np.random.default_rng((seed, 99)).permutation(n_target))
    return DomainData(source, train, val, order)


# ------------------------------------------------------------------------------------------- photographs
PHOTOS = ("coins", "astronaut", "coffee", "chelsea")


def photographs(size: int = 64, names: Sequence[str] = PHOTOS) -> dict[str, torch.Tensor]:
    """Real photographs from scikit-image (no download), centre-cropped to a square and resized to
    ``size`` x ``size``: ``{name: [3, size, size] float32 in [0, 1]}``. Grey images are repeated to RGB."""
    try:
        import skimage.data
        from skimage.transform import resize
    except ImportError:
        raise ImportError("the photographs need scikit-image: pip install scikit-image") from None
    out = {}
    for name in names:
        img = np.asarray(getattr(skimage.data, name)(), dtype=np.float64)
        if img.max() > 1.0:
            img = img / 255.0
        if img.ndim == 2:
            img = np.stack([img] * 3, -1)
        img = img[..., :3]
        h, w = img.shape[:2]
        s = min(h, w)
        img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        img = resize(img, (size, size), anti_aliasing=True)
        out[name] = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)).astype(np.float32))
    return out


# --------------------------------------------------------------------------------- real benchmarks (full)
#: the 19 Cityscapes evaluation classes (train ids 0..18)
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                      "motorcycle", "bicycle")
#: Cityscapes (and GTA5, which uses the same ids) label id -> train id
CITYSCAPES_ID_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                          25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
#: Synthia (RAND-CITYSCAPES) label id -> Cityscapes train id
SYNTHIA_ID_TO_TRAIN = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10, 10: 11, 17: 12,
                       8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18}
BENCHMARKS = ("gta5", "synthia", "cityscapes", "bdd")
_LAYOUT = {
    "gta5": "images/*.png and labels/*.png (same file names; label ids as Cityscapes)",
    "synthia": "RGB/*.png and GT/LABELS/*.png (RAND-CITYSCAPES; 16-bit, class id in the first channel)",
    "cityscapes": "leftImg8bit/<split>/<city>/*_leftImg8bit.png and gtFine/<split>/<city>/*_gtFine_labelIds.png",
    "bdd": "images/10k/<split>/*.jpg and labels/sem_seg/masks/<split>/*.png (train ids 0-18, 255 ignored)",
}


def data_root() -> Path:
    """Where the real benchmarks are looked for: ``$LIONSNB_DATA`` or ``~/.cache/lionsnb/data``."""
    return Path(os.environ.get("LIONSNB_DATA") or Path.home() / ".cache" / "lionsnb" / "data")


def benchmark_dir(name: str) -> Path:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}: use one of {', '.join(BENCHMARKS)}.")
    return data_root() / name


def _pairs(name: str, root: Path, split: str) -> list[tuple[Path, Path]]:
    if name == "gta5":
        images = sorted((root / "images").glob("*.png"))
        return [(p, root / "labels" / p.name) for p in images]
    if name == "synthia":
        images = sorted((root / "RGB").glob("*.png"))
        return [(p, root / "GT" / "LABELS" / p.name) for p in images]
    if name == "cityscapes":
        images = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
        return [(p, root / "gtFine" / split / p.parent.name / p.name.replace("_leftImg8bit.png",
                                                                             "_gtFine_labelIds.png"))
                for p in images]
    images = sorted((root / "images" / "10k" / split).glob("*.jpg"))
    return [(p, root / "labels" / "sem_seg" / "masks" / split / (p.stem + ".png")) for p in images]


def benchmark_problem(name: str, split: str = "train") -> str | None:
    """None when the benchmark is in its folder, else what to do."""
    root = benchmark_dir(name)
    if not root.is_dir() or not _pairs(name, root, split):
        return (f"no {name} data ({split} split) in {root}: download it yourself (it cannot be fetched here) and "
                f"lay it out as {_LAYOUT[name]}, or set LIONSNB_DATA to the folder that holds {name}/.")
    missing = [str(lbl) for _, lbl in _pairs(name, root, split) if not lbl.is_file()][:3]
    if missing:
        return f"{name}: label files are missing, e.g. {', '.join(missing)}; expected layout {_LAYOUT[name]}."
    return None


def _map_ids(raw: np.ndarray, table: dict[int, int] | None) -> np.ndarray:
    if table is None:   # BDD: already train ids, 255 = ignore
        out = raw.astype(np.int64)
        out[out > 18] = IGNORE_INDEX
        return out
    lut = np.full(max(256, int(raw.max()) + 1), IGNORE_INDEX, dtype=np.int64)
    for k, v in table.items():
        lut[k] = v
    return lut[raw]


def load_benchmark(name: str, split: str = "train", size: tuple[int, int] = (128, 256), limit: int | None = None,
                   root: Path | str | None = None) -> SegSet:
    """Load a real SSDA benchmark from a local folder, resized to ``size`` = (height, width) (images bilinear,
    labels nearest), labels mapped to the 19 Cityscapes train ids with ``IGNORE_INDEX`` elsewhere.

    Raises FileNotFoundError with the expected layout when the folder is missing (nothing is downloaded).
    """
    from PIL import Image

    root = Path(root) if root is not None else benchmark_dir(name)
    if root.is_dir() and _pairs(name, root, split):
        pairs = _pairs(name, root, split)
    else:
        raise FileNotFoundError(f"no {name} data ({split} split) in {root}: download it yourself (it cannot be "
                                f"fetched here) and lay it out as {_LAYOUT[name]}, or set LIONSNB_DATA to the folder "
                                f"that holds {name}/.")
    pairs = pairs[:limit] if limit else pairs
    table = {"gta5": CITYSCAPES_ID_TO_TRAIN, "cityscapes": CITYSCAPES_ID_TO_TRAIN, "synthia": SYNTHIA_ID_TO_TRAIN,
             "bdd": None}[name]
    h, w = size
    images = torch.empty((len(pairs), 3, h, w), dtype=torch.float32)
    labels = torch.empty((len(pairs), h, w), dtype=torch.int64)
    for i, (img_path, lbl_path) in enumerate(pairs):
        if not lbl_path.is_file():
            raise FileNotFoundError(f"{name}: no label file {lbl_path} for {img_path.name}.")
        img = Image.open(img_path).convert("RGB").resize((w, h), Image.BILINEAR)
        images[i] = torch.from_numpy(np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0)
        if name == "synthia":
            import imageio.v2 as imageio

            raw = np.asarray(imageio.imread(lbl_path))
            raw = raw[..., 0] if raw.ndim == 3 else raw
            lbl = Image.fromarray(raw.astype(np.int32)).resize((w, h), Image.NEAREST)
        else:
            lbl = Image.open(lbl_path).resize((w, h), Image.NEAREST)
        labels[i] = torch.from_numpy(_map_ids(np.asarray(lbl), table))
    return SegSet(images, labels, name)


def load_real_domains(source: str = "gta5", target: str = "cityscapes", size: tuple[int, int] = (128, 256),
                      n_source: int | None = None, n_target: int | None = None, n_val: int | None = None,
                      seed: int = 0) -> DomainData:
    """Source train, target train and target val (Cityscapes/BDD ``val``) of a real benchmark pair."""
    for name in (source, target):
        problem = benchmark_problem(name, "train")
        if problem:
            raise FileNotFoundError(problem)
    src = load_benchmark(source, "train", size, n_source)
    tgt = load_benchmark(target, "train", size, n_target)
    val = load_benchmark(target, "val", size, n_val)
    order = torch.from_numpy(np.random.default_rng((seed, 99)).permutation(len(tgt)))
    return DomainData(src, tgt, val, order, num_classes=19, class_names=CITYSCAPES_CLASSES)
