"""Generated image-caption pairs for the tiny VLM (seeded, in process) and a word-level tokenizer.

An image (``size`` x ``size`` RGB, values in [0, 1]) shows one or two shapes (circle, square, triangle, cross) in
one of six colours on a background colour, plus a per-image random texture, so every image is unique. Its
caption is a template that the pixels determine ("a red circle and a blue cross on grey") followed by an
**idiosyncratic tail** ("near harbour willow") drawn at random, which no pixel predicts: a model can only know
the tail of an image it was trained on, which is what membership inference detects.

``distribution="shifted"`` draws images from another distribution (backgrounds, colour hues and texture that
the IID images never have) for the distribution-shift confound.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["SHAPES", "COLOURS", "BACKGROUNDS", "SHIFTED_BACKGROUNDS", "TAIL_WORDS", "INSTRUCTION", "WordTokenizer",
           "Pairs", "make_pairs", "make_tokenizer", "patchify", "DISTRIBUTIONS"]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
#: colour name -> RGB
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.9, 0.1, 0.1), "green": (0.1, 0.75, 0.2), "blue": (0.15, 0.25, 0.95),
    "yellow": (0.95, 0.9, 0.1), "purple": (0.6, 0.15, 0.75), "orange": (1.0, 0.55, 0.05)}
BACKGROUNDS: dict[str, tuple[float, float, float]] = {"grey": (0.5, 0.5, 0.5), "black": (0.05, 0.05, 0.05)}
#: backgrounds that only the shifted distribution uses (the IID data never shows them)
SHIFTED_BACKGROUNDS: dict[str, tuple[float, float, float]] = {"white": (0.95, 0.95, 0.95), "teal": (0.1, 0.5, 0.5)}
#: the idiosyncratic tail: two words the pixels cannot predict
TAIL_WORDS: tuple[str, ...] = (
    "harbour", "willow", "granite", "lantern", "meadow", "copper", "orchard", "quarry", "saffron", "thistle",
    "beacon", "cedar", "delta", "ember", "fjord", "garnet", "heather", "island", "juniper", "kestrel",
    "lagoon", "marble", "nettle", "oasis", "pebble", "quartz", "raven", "summit", "tundra", "umber",
    "valley", "walnut", "yarrow", "zephyr", "anchor", "bramble", "canyon", "dune", "estuary", "falcon",
    "glacier", "hollow", "ivy", "jasper", "kelp", "lichen", "moss", "north", "ochre", "prairie")
#: the instruction of the tiny VLM (the LLaVA role: "describe the image briefly")
INSTRUCTION = "describe the image ."
DISTRIBUTIONS = ("iid", "shifted")
SPECIALS = ("<pad>", "<s>", "</s>", "<image>", "USER:", "ASSISTANT:")


class WordTokenizer:
    """A word-level tokenizer over a fixed vocabulary (specials, instruction words, caption words).

    ``encode(text, add_special_tokens=True)`` prepends BOS like a LLaMA tokenizer; ``decode`` joins words and
    drops specials. Unknown words raise a ValueError that names them.
    """

    def __init__(self, words: Sequence[str]):
        vocab = list(SPECIALS) + [w for w in dict.fromkeys(words) if w not in SPECIALS]
        self.vocab: list[str] = vocab
        self.index: dict[str, int] = {w: i for i, w in enumerate(vocab)}
        self.pad_token_id, self.bos_token_id, self.eos_token_id = 0, 1, 2
        self.image_token_id = 3
        self.special_ids: tuple[int, ...] = tuple(range(len(SPECIALS)))

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        words = text.split()
        unknown = [w for w in words if w not in self.index]
        if unknown:
            raise ValueError(f"words not in the tiny VLM's vocabulary: {unknown[:5]}")
        ids = [self.index[w] for w in words]
        return [self.bos_token_id] + ids if add_special_tokens else ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        out = []
        for i in ids:
            i = int(i)
            if skip_special_tokens and i < len(SPECIALS):
                continue
            out.append(self.vocab[i])
        return " ".join(out)


def make_tokenizer() -> WordTokenizer:
    """The tokenizer shared by every tiny VLM (vocabulary covers IID and shifted captions)."""
    words = INSTRUCTION.split() + ["a", "and", "on", "near"] + list(COLOURS) + list(SHAPES)
    words += list(BACKGROUNDS) + list(SHIFTED_BACKGROUNDS) + list(TAIL_WORDS)
    return WordTokenizer(words)


@dataclass
class Pairs:
    """Images ``[n, 3, size, size]`` (float32 in [0, 1]), their captions and what generated them."""

    images: torch.Tensor
    captions: list[str]
    templates: list[str]
    tails: list[str]
    distribution: str
    seed: int
    meta: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.captions)

    def subset(self, index: Sequence[int]) -> Pairs:
        idx = list(index)
        return Pairs(self.images[idx], [self.captions[i] for i in idx], [self.templates[i] for i in idx],
                     [self.tails[i] for i in idx], self.distribution, self.seed, [self.meta[i] for i in idx])


def _shape_mask(shape: str, size: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx ** 2 + dy ** 2 <= r ** 2
    if shape == "square":
        return (np.abs(dx) <= 0.8 * r) & (np.abs(dy) <= 0.8 * r)
    if shape == "triangle":
        return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.55)
    if shape == "cross":
        w = max(0.6, 0.3 * r)
        return ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))
    raise ValueError(f"unknown shape {shape!r}: choose from {SHAPES}")


def make_pairs(n: int, seed: int, size: int = 16, distribution: str = "iid", tail_len: int = 2) -> Pairs:
    """``n`` seeded image-caption pairs from ``distribution`` (``iid`` or ``shifted``).

    IID: one or two shapes, six colours, a grey or black background, a faint random texture. Shifted: white or
    teal backgrounds, colours with perturbed hues, a stronger striped texture; the caption template names the
    new background (a word the IID captions never use). The tail is ``near`` + ``tail_len`` random words.
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution={distribution!r}: use one of {DISTRIBUTIONS}")
    if size < 8:
        raise ValueError(f"size={size} is too small to draw shapes: use size >= 8 (16 or 32)")
    rng = np.random.default_rng([seed, 0 if distribution == "iid" else 1])
    backgrounds = BACKGROUNDS if distribution == "iid" else SHIFTED_BACKGROUNDS
    colours = list(COLOURS)
    images = np.zeros((n, 3, size, size), dtype=np.float32)
    captions, templates, tails, meta = [], [], [], []
    for i in range(n):
        bg = list(backgrounds)[rng.integers(len(backgrounds))]
        img = np.empty((size, size, 3))
        img[:] = backgrounds[bg]
        if distribution == "iid":
            img += rng.normal(0, 0.04, (size, size, 1)) + rng.normal(0, 0.02, (size, size, 3))
        else:
            phase, freq = rng.uniform(0, 2 * np.pi), rng.uniform(0.8, 1.6)
            stripes = 0.12 * np.sin(freq * np.arange(size) + phase)[None, :, None]
            img += stripes + rng.normal(0, 0.06, (size, size, 3))
        k = 1 + int(rng.integers(2))
        halves = [(0.5, 1.0)] if k == 1 else [(0.0, 0.5), (0.5, 1.0)]
        parts = []
        for j in range(k):
            shape, colour = SHAPES[rng.integers(len(SHAPES))], colours[rng.integers(len(colours))]
            lo, hi = halves[j] if k == 2 else (0.0, 1.0)
            r = size * rng.uniform(0.17, 0.23)
            cx = size * rng.uniform(lo, hi) if k == 1 else size * (lo + hi) / 2 + rng.uniform(-1, 1)
            cx = float(np.clip(cx, r, size - r))
            cy = float(size * rng.uniform(0.3, 0.7))
            rgb = np.array(COLOURS[colour])
            if distribution == "shifted":
                rgb = np.clip(rgb[[1, 2, 0]] * 0.5 + rgb * 0.5 + rng.normal(0, 0.08, 3), 0, 1)
            img[_shape_mask(shape, size, cx, cy, r)] = rgb
            parts.append(f"a {colour} {shape}")
        template = " and ".join(parts) + f" on {bg}"
        tail = " ".join(TAIL_WORDS[t] for t in rng.integers(len(TAIL_WORDS), size=tail_len))
        images[i] = np.clip(img, 0, 1).transpose(2, 0, 1)
        templates.append(template)
        tails.append(tail)
        captions.append(f"{template} near {tail}")
        meta.append({"shapes": k, "background": bg})
    return Pairs(torch.from_numpy(images), captions, templates, tails, distribution, seed, meta)


def patchify(images: torch.Tensor, patch: int = 4) -> torch.Tensor:
    """``[B, 3, H, W]`` -> ``[B, (H/patch)*(W/patch), 3*patch*patch]`` patch vectors, row-major."""
    b, c, h, w = images.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch}")
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // patch) * (w // patch), c * patch * patch)
