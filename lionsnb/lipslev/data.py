"""Data for the LipsLev series: AG-News (hub, or the offline test split) and a synthetic task.

* AG-News (Zhang et al. 2015): text = title + " " + description, label = class - 1 (World, Sports,
  Business, Sci/Tech). With network: the hub dataset ``fancyzhx/ag_news``. Offline: the test split CSV
  found through an explicit path, the ``LIONSNB_AG_NEWS`` env var, or ``../shared/data/ag_news/``;
  offline convention: train on test rows 1000-7599, evaluate on rows 0-999 (not comparable to the paper).
* The authors' released AG-News checkpoint (p = 2) and its alphabet, read from ``<shared>/data/lipslev_official/``
  (:func:`official_checkpoint`, :func:`ag_news_alphabet`).
* ``numbers_letters`` (official ``utils.py``): strings over 26 letters + 10 digits, label m in {0, 1};
  each character is a letter with probability 0.8 if m = 1, else a digit with probability 0.8.
"""
from __future__ import annotations

import csv
import os
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

AG_NEWS_HUB_ID = "fancyzhx/ag_news"
AG_NEWS_CLASSES = ("World", "Sports", "Business", "Sci/Tech")
AG_NEWS_ENV = "LIONSNB_AG_NEWS"
OFFLINE_EVAL_ROWS = range(0, 1000)
OFFLINE_TRAIN_ROWS = range(1000, 7600)
SHARED_ENV = "LIONSNB_SHARED"
_REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = _REPO.parent / "shared" / "data"


@dataclass
class TextSplit:
    """Texts with integer labels."""

    texts: list[str]
    labels: list[int]
    classes: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, rows: Sequence[int] | range) -> TextSplit:
        rows = list(rows)
        return TextSplit([self.texts[i] for i in rows], [self.labels[i] for i in rows], self.classes,
                         f"{self.source} rows {rows[0]}..{rows[-1]}" if rows else self.source)

    def __repr__(self) -> str:
        counts = np.bincount(self.labels, minlength=len(self.classes)).tolist() if self.labels else []
        lengths = [len(t) for t in self.texts] or [0]
        return (f"TextSplit({len(self)} texts from {self.source}; class counts {counts}; "
                f"length mean {np.mean(lengths):.0f}, max {max(lengths)})")


def shared_dir(name: str) -> Path:
    """``<shared>/data/<name>``: read-only test data in ``$LIONSNB_SHARED`` or ``../shared`` next to the repository."""
    root = os.environ.get(SHARED_ENV)
    return (Path(root) / "data" / name) if root else SHARED_DATA / name


#: the authors' checkpoint: folder under <shared>/data and its two files (state dict, char_to_id JSON)
OFFICIAL_FOLDER = "lipslev_official"
OFFICIAL_FILES = ("official_ag_news_state.pt", "official_char_to_id.json")


def official_checkpoint(folder: str | os.PathLike | None = None) -> tuple[tuple[Path, Path] | None, str]:
    """``((state dict, char_to_id JSON), "")`` for the authors' AG-News checkpoint, or ``(None, why not)``.

    ``folder`` defaults to ``<shared>/data/lipslev_official`` (:func:`shared_dir`). The AG-News test split must be
    found too (:func:`find_ag_news_csv`), since the checkpoint is evaluated on it. Load the model with
    :func:`lionsnb.lipslev.model.load_official_checkpoint`.
    """
    folder = Path(folder) if folder is not None else shared_dir(OFFICIAL_FOLDER)
    paths = tuple(folder / name for name in OFFICIAL_FILES)
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        return None, f"missing {', '.join(missing)}"
    try:
        find_ag_news_csv()
    except FileNotFoundError as err:
        return None, f"the checkpoint is there but the AG-News test split is not ({err})"
    return paths, ""  # type: ignore[return-value]


def ag_news_alphabet(texts: Sequence[str]):
    """``(alphabet, description)``: the authors' AG-News alphabet (their ``char_to_id`` JSON, 56 characters) when it
    is in ``<shared>/data/lipslev_official``, else the lowercased characters of ``texts`` in first-occurrence order."""
    from lionsnb.lipslev.levenshtein import Alphabet

    path = shared_dir(OFFICIAL_FOLDER) / OFFICIAL_FILES[1]
    if path.is_file():
        alphabet = Alphabet.from_json(path)
        return alphabet, f"the authors' char_to_id ({alphabet.size} characters)"
    return Alphabet.from_texts(texts), "the characters of the AG-News texts (the authors' char_to_id is not there)"


def find_ag_news_csv(path: str | os.PathLike | None = None) -> Path:
    """The offline AG-News test CSV: ``path`` (file or folder), else $LIONSNB_AG_NEWS, else ../shared/data/ag_news."""
    candidates = []
    for source in (path, os.environ.get(AG_NEWS_ENV) or None, shared_dir("ag_news")):
        if source is None:
            continue
        source = Path(source)
        candidates.append(source)
        target = source / "test.csv" if source.is_dir() else source
        if target.is_file():
            return target
        if path is not None:
            break
    raise FileNotFoundError(
        "no offline AG-News test split found (looked at: " + ", ".join(str(c) for c in candidates) + "). "
        f"Pass the path of the original test.csv (class, title, description), set ${AG_NEWS_ENV} to it, "
        f"or, with network, use load_ag_news(source='hub') for {AG_NEWS_HUB_ID}.")


def read_ag_news_csv(path: str | os.PathLike) -> TextSplit:
    """The original Zhang et al. CSV: no header, (class 1-4, title, description); text = title + ' ' + description."""
    texts, labels = [], []
    with open(path, newline="", encoding="utf-8") as handle:
        for row_number, row in enumerate(csv.reader(handle)):
            if len(row) != 3 or not row[0].strip().isdigit():
                raise ValueError(f"{path}, row {row_number}: expected (class, title, description), got {row[:3]!r}")
            labels.append(int(row[0]) - 1)
            texts.append(row[1] + " " + row[2])
    return TextSplit(texts, labels, AG_NEWS_CLASSES, f"AG-News {Path(path).name}")


def load_ag_news(split: str = "test", *, source: str = "offline", path: str | os.PathLike | None = None) -> TextSplit:
    """AG-News: ``source='offline'`` reads the test CSV (see :func:`find_ag_news_csv`); ``'hub'`` downloads."""
    if source == "hub":
        try:
            from datasets import load_dataset
        except ImportError as err:
            raise ImportError("source='hub' needs the `datasets` package: pip install datasets") from err
        ds = load_dataset(AG_NEWS_HUB_ID, split=split)
        return TextSplit(list(ds["text"]), [int(y) for y in ds["label"]], AG_NEWS_CLASSES, f"{AG_NEWS_HUB_ID}:{split}")
    if source != "offline":
        raise ValueError(f"source = {source!r}: use 'offline' or 'hub'")
    if split != "test":
        raise ValueError(f"offline AG-News has only the test split (asked for {split!r}); use "
                         "offline_split() for the train/eval convention or source='hub' with network")
    return read_ag_news_csv(find_ag_news_csv(path))


def offline_split(path: str | os.PathLike | None = None, *, n_train: int | None = None,
                  n_eval: int | None = None) -> tuple[TextSplit, TextSplit]:
    """(train, eval) = test rows 1000-7599 and 0-999 (optionally the first n of each)."""
    data = load_ag_news(path=path)
    train_rows, eval_rows = list(OFFLINE_TRAIN_ROWS), list(OFFLINE_EVAL_ROWS)
    return data.subset(train_rows[:n_train]), data.subset(eval_rows[:n_eval])


def numbers_letters(n: int, *, min_len: int = 10, max_len: int = 40, seed: int = 0) -> TextSplit:
    """The synthetic letters-vs-digits task: label 1 = mostly letters, 0 = mostly digits (p = 0.8)."""
    if n < 1 or min_len < 1 or max_len < min_len:
        raise ValueError("need n >= 1 and 1 <= min_len <= max_len")
    rng = np.random.default_rng(seed)
    letters, digits = np.array(list(string.ascii_lowercase)), np.array(list(string.digits))
    texts, labels = [], []
    for _ in range(n):
        label = int(rng.integers(2))
        length = int(rng.integers(min_len, max_len + 1))
        is_letter = rng.random(length) < (0.8 if label == 1 else 0.2)
        chars = np.where(is_letter, rng.choice(letters, length), rng.choice(digits, length))
        texts.append("".join(chars))
        labels.append(label)
    return TextSplit(texts, labels, ("digits", "letters"), "numbers_letters (synthetic)")


NUMBERS_LETTERS_CHARS = tuple(string.ascii_lowercase + string.digits)
