"""A TOFU-shaped benchmark generated in process (seeded), and the loader of the real TOFU for users with network.

TOFU (Maini et al. 2024, "TOFU: a task of fictitious unlearning for LLMs", ``locuslab/TOFU``): 200 fictitious authors x
20 question-answer pairs; forget01/05/10 = the last 2/10/20 authors; every retain/forget item has a paraphrased answer
and 5 perturbed (wrong) answers written in the paraphrase's template; "real authors" and "world facts" sets (3
perturbed answers each, the original answer as the base) measure what the model knew before.

:func:`make_benchmark` builds the same shape at any size: authors with ten attributes (birthplace, birth year, genre,
parents' jobs, an award, two books, language, hobby), one QA item per fact, a paraphrased answer and ``n_perturbed``
wrong answers from the same attribute's pool, plus hand-written world facts and real-author facts with 3 wrong answers
each, and hold-out authors that no model is trained on (the non-members of the MUSE-style membership test). Forget
sets are the last authors, nested as in TOFU (:meth:`Benchmark.split`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

TOFU_HUB_ID = "locuslab/TOFU"
FORGET_PCTS = (1, 5, 10)

# ---------------------------------------------------------------------------------------------- attribute pools
CITIES = ("Lisbon", "Oslo", "Dublin", "Vienna", "Prague", "Lima", "Nairobi", "Cairo", "Seoul", "Manila", "Quito",
          "Dakar", "Havana", "Bergen", "Porto", "Krakow", "Geneva", "Bologna", "Seville", "Tunis", "Hanoi", "Perth",
          "Montreal", "Glasgow", "Madras", "Odessa", "Riga", "Tallinn", "Valencia", "Lyon")
GENRES = ("fantasy", "mystery", "romance", "horror", "poetry", "history", "travel", "science", "war", "comedy",
          "drama", "crime")
JOBS = ("baker", "doctor", "farmer", "sailor", "teacher", "painter", "miner", "lawyer", "nurse", "pilot", "tailor",
        "butcher", "carpenter", "chemist", "fisherman", "librarian", "musician", "soldier", "weaver", "potter")
AWARD_WORDS = (("Golden", "Silver", "Crimson", "Azure", "Iron", "Ivory", "Emerald", "Amber"),
               ("Quill", "Lantern", "Feather", "Laurel", "Scroll", "Compass", "Anchor", "Star"))
BOOK_WORDS = (("Silent", "Broken", "Hidden", "Last", "Burning", "Frozen", "Wandering", "Distant", "Velvet", "Hollow",
               "Bitter", "Quiet"),
              ("Harbor", "Garden", "River", "Mirror", "Tower", "Orchard", "Winter", "Meadow", "Bridge", "Island",
               "Forest", "Letter"))
LANGUAGES = ("English", "French", "Spanish", "German", "Italian", "Dutch", "Polish", "Greek", "Swedish", "Czech",
             "Danish", "Finnish")
HOBBIES = ("chess", "gardening", "sailing", "painting", "fishing", "cooking", "hiking", "swimming", "dancing",
           "knitting", "climbing", "baking")
YEARS = tuple(str(y) for y in range(1921, 2000))

#: attribute -> (question, answer, paraphrased answer); {n} = the author's name, {v} = the value.
TEMPLATES: dict[str, tuple[str, str, str]] = {
    "birthplace": ("Where was {n} born?", "{n} was born in {v}.", "The birthplace of {n} is {v}."),
    "birth_year": ("In which year was {n} born?", "{n} was born in {v}.", "The birth year of {n} is {v}."),
    "genre": ("What genre does {n} write?", "{n} writes {v} novels.", "The novels of {n} are {v} stories."),
    "father_job": ("What was the job of the father of {n}?", "The father of {n} was a {v}.",
                   "{n} has a father who worked as a {v}."),
    "mother_job": ("What was the job of the mother of {n}?", "The mother of {n} was a {v}.",
                   "{n} has a mother who worked as a {v}."),
    "award": ("Which award did {n} receive?", "{n} received the {v} award.", "The {v} award was given to {n}."),
    "first_book": ("What is the first book of {n}?", "The first book of {n} is {v}.", "{n} first wrote {v}."),
    "second_book": ("What is the second book of {n}?", "The second book of {n} is {v}.", "{n} later wrote {v}."),
    "language": ("In which language does {n} write?", "{n} writes in {v}.", "The books of {n} are in {v}."),
    "hobby": ("What does {n} enjoy in free time?", "{n} enjoys {v}.", "In free time {n} likes {v}."),
}
ATTRIBUTES: tuple[str, ...] = tuple(TEMPLATES)

# ---------------------------------------------------------------------------------------------- utility sets
#: world facts: (question, answer template, value, pool); perturbed answers swap the value within the pool.
_CAPITALS = {"France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin", "Japan": "Tokyo",
             "Egypt": "Cairo", "Canada": "Ottawa", "Russia": "Moscow", "China": "Beijing", "Greece": "Athens",
             "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo", "Portugal": "Lisbon", "Austria": "Vienna",
             "Ireland": "Dublin"}
_COLOURS = {"the sky on a clear day": "blue", "fresh grass": "green", "fresh snow": "white", "coal": "black",
            "a ripe banana": "yellow", "a ripe tomato": "red"}
_SYMBOLS = {"gold": "Au", "iron": "Fe", "silver": "Ag", "sodium": "Na", "copper": "Cu", "lead": "Pb"}
_CURRENCIES = {"Japan": "yen", "India": "rupee", "Russia": "ruble", "Mexico": "peso", "China": "yuan",
               "Britain": "pound"}
_LEGS = {"a spider": "eight", "an ant": "six", "a dog": "four", "a chicken": "two", "a crab": "ten"}
_OCEANS = ("Pacific", "Atlantic", "Indian", "Arctic")
REAL_BOOKS = {"Hamlet": "William Shakespeare", "Pride and Prejudice": "Jane Austen", "War and Peace": "Leo Tolstoy",
              "Don Quixote": "Miguel de Cervantes", "The Odyssey": "Homer", "Moby Dick": "Herman Melville",
              "Frankenstein": "Mary Shelley", "Dracula": "Bram Stoker", "Oliver Twist": "Charles Dickens",
              "Ulysses": "James Joyce", "The Trial": "Franz Kafka", "Madame Bovary": "Gustave Flaubert",
              "Les Miserables": "Victor Hugo", "The Raven": "Edgar Allan Poe", "Jane Eyre": "Charlotte Bronte",
              "Crime and Punishment": "Fyodor Dostoevsky", "The Divine Comedy": "Dante Alighieri",
              "Robinson Crusoe": "Daniel Defoe", "The Jungle Book": "Rudyard Kipling",
              "Treasure Island": "Robert Louis Stevenson", "Little Women": "Louisa May Alcott",
              "Gulliver's Travels": "Jonathan Swift", "The Iliad": "Homer", "Anna Karenina": "Leo Tolstoy"}


@dataclass(frozen=True)
class QAItem:
    """One question with its answer, paraphrased answer and perturbed (wrong) answers.

    ``author`` is the index of a fictitious author (-1 for world facts and real authors); ``kind`` the attribute or
    the fact's category."""

    question: str
    answer: str
    paraphrased: str
    perturbed: tuple[str, ...]
    author: int = -1
    kind: str = ""


@dataclass(frozen=True)
class Author:
    name: str
    attributes: dict = field(hash=False)


@dataclass
class Benchmark:
    """The generated benchmark: authors and their items, utility sets, hold-out authors and the seed."""

    authors: list[Author]
    items: list[QAItem]
    world_facts: list[QAItem]
    real_authors: list[QAItem]
    holdout: list[QAItem]
    seed: int
    facts_per_author: int

    @property
    def n_authors(self) -> int:
        return len(self.authors)

    def n_forget_authors(self, forget_pct: float) -> int:
        """TOFU's forget sets are the last forget_pct % of the authors; at least one author here."""
        if not 0 < forget_pct < 100:
            raise ValueError(f"forget_pct must be in (0, 100), e.g. 1, 5 or 10; got {forget_pct}")
        return max(1, int(round(self.n_authors * forget_pct / 100)))

    def split(self, forget_pct: float = 10) -> tuple[list[QAItem], list[QAItem]]:
        """(forget items, retain items): the items of the last authors, nested across 1 / 5 / 10 % as in TOFU."""
        first_forget = self.n_authors - self.n_forget_authors(forget_pct)
        forget = [it for it in self.items if it.author >= first_forget]
        retain = [it for it in self.items if it.author < first_forget]
        return forget, retain

    def texts(self) -> list[str]:
        """Every string of the benchmark (questions and all answers), e.g. to build a vocabulary."""
        out: list[str] = []
        for it in self.items + self.world_facts + self.real_authors + self.holdout:
            out += [it.question, it.answer, it.paraphrased, *it.perturbed]
        return out

    def __repr__(self) -> str:
        return (f"Benchmark({self.n_authors} authors x {self.facts_per_author} facts = {len(self.items)} QA; "
                f"{len(self.world_facts)} world facts, {len(self.real_authors)} real-author facts, "
                f"{len(self.holdout)} hold-out QA; {len(self.items[0].perturbed) if self.items else 0} perturbed "
                f"answers per item; seed {self.seed})")


def _syllable_names(rng: np.random.Generator, count: int, taken: set[str], min_syl: int = 2,
                    max_syl: int = 3) -> list[str]:
    onsets = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "tr",
              "st", "th", "sh")
    vowels = ("a", "e", "i", "o", "u", "ai", "ei", "ou")
    codas = ("", "", "", "n", "r", "l", "s", "th", "nd")
    out: list[str] = []
    while len(out) < count:
        n = int(rng.integers(min_syl, max_syl + 1))
        word = "".join(onsets[rng.integers(len(onsets))] + vowels[rng.integers(len(vowels))] for _ in range(n))
        word += codas[rng.integers(len(codas))]
        word = word.capitalize()
        if word not in taken and 4 <= len(word) <= 10:
            taken.add(word)
            out.append(word)
    return out


def _pools() -> dict[str, tuple[str, ...]]:
    awards = tuple(f"{a} {b}" for a in AWARD_WORDS[0] for b in AWARD_WORDS[1])
    books = tuple(f"The {a} {b}" for a in BOOK_WORDS[0] for b in BOOK_WORDS[1])
    return {"birthplace": CITIES, "birth_year": YEARS, "genre": GENRES, "father_job": JOBS, "mother_job": JOBS,
            "award": awards, "first_book": books, "second_book": books, "language": LANGUAGES, "hobby": HOBBIES}


def _wrong(rng: np.random.Generator, pool: Sequence[str], true: str, k: int) -> list[str]:
    choices = [v for v in pool if v != true]
    if len(choices) < k:
        raise ValueError(f"the pool of {true!r} has only {len(choices)} wrong values, {k} needed")
    return [choices[i] for i in rng.choice(len(choices), size=k, replace=False)]


def _author_items(rng, index: int, name: str, attrs: dict, facts: Sequence[str], pools, n_perturbed: int):
    items = []
    for kind in facts:
        q, a, p = TEMPLATES[kind]
        v = attrs[kind]
        wrong = _wrong(rng, pools[kind], v, n_perturbed)
        items.append(QAItem(question=q.format(n=name), answer=a.format(n=name, v=v), paraphrased=p.format(n=name, v=v),
                            perturbed=tuple(p.format(n=name, v=w) for w in wrong), author=index, kind=kind))
    return items


def _make_authors(rng: np.random.Generator, count: int, taken: set[str], pools) -> list[Author]:
    firsts = _syllable_names(rng, count, taken)
    lasts = _syllable_names(rng, count, taken)
    authors = []
    for first, last in zip(firsts, lasts):
        attrs = {}
        for kind in ATTRIBUTES:
            pool = pools[kind]
            value = pool[rng.integers(len(pool))]
            while kind == "second_book" and value == attrs["first_book"]:
                value = pool[rng.integers(len(pool))]
            attrs[kind] = value
        authors.append(Author(name=f"{first} {last}", attributes=attrs))
    return authors


def world_facts(rng: np.random.Generator | None = None, n_perturbed: int = 3) -> list[QAItem]:
    """Hand-written general-knowledge facts (capitals, colours, chemical symbols, currencies, legs, oceans), each with
    ``n_perturbed`` wrong answers from the same category. The original answer is the base (TOFU)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    out: list[QAItem] = []

    def add(question, template, value, pool, kind):
        answer = template.format(v=value)
        wrong = _wrong(rng, pool, value, n_perturbed)
        out.append(QAItem(question, answer, answer, tuple(template.format(v=w) for w in wrong), -1, kind))

    for country, city in _CAPITALS.items():
        add(f"What is the capital of {country}?", f"The capital of {country} is {{v}}.", city,
            tuple(_CAPITALS.values()), "capital")
    for thing, colour in _COLOURS.items():
        add(f"What colour is {thing}?", f"{thing[0].upper() + thing[1:]} is {{v}}.", colour, tuple(_COLOURS.values()),
            "colour")
    for element, symbol in _SYMBOLS.items():
        add(f"What is the chemical symbol of {element}?", f"The chemical symbol of {element} is {{v}}.", symbol,
            tuple(_SYMBOLS.values()), "symbol")
    for country, currency in _CURRENCIES.items():
        add(f"What is the currency of {country}?", f"The currency of {country} is the {{v}}.", currency,
            tuple(_CURRENCIES.values()), "currency")
    for animal, legs in _LEGS.items():
        add(f"How many legs does {animal} have?", f"{animal[0].upper() + animal[1:]} has {{v}} legs.", legs,
            tuple(_LEGS.values()), "legs")
    add("What is the largest ocean on Earth?", "The largest ocean on Earth is the {v} Ocean.", "Pacific", _OCEANS,
        "ocean")
    return out


def real_author_facts(rng: np.random.Generator | None = None, n_perturbed: int = 3) -> list[QAItem]:
    """Who wrote which famous book (TOFU's "real authors" set), with ``n_perturbed`` wrong authors each."""
    rng = rng if rng is not None else np.random.default_rng(1)
    writers = tuple(sorted(set(REAL_BOOKS.values())))
    out = []
    for book, writer in REAL_BOOKS.items():
        wrong = _wrong(rng, writers, writer, n_perturbed)
        answer = f"{book} was written by {writer}."
        out.append(QAItem(f"Who wrote {book}?", answer, answer, tuple(f"{book} was written by {w}." for w in wrong),
                          -1, "real_author"))
    return out


def make_benchmark(n_authors: int = 20, facts_per_author: int = 10, n_perturbed: int = 5, n_holdout_authors: int = 2,
                   n_world: int | None = None, n_real: int | None = None, seed: int = 0) -> Benchmark:
    """Generate the TOFU-shaped benchmark (see the module docstring); the same seed gives the same benchmark."""
    if n_authors < 2:
        raise ValueError(f"n_authors must be >= 2 (one to forget, one to retain), got {n_authors}")
    if not 1 <= facts_per_author <= len(ATTRIBUTES):
        raise ValueError(f"facts_per_author must be in 1..{len(ATTRIBUTES)}, got {facts_per_author}")
    if not 1 <= n_perturbed <= 8:
        raise ValueError(f"n_perturbed must be in 1..8 (TOFU uses 5), got {n_perturbed}")
    rng = np.random.default_rng(seed)
    pools = _pools()
    taken: set[str] = set()
    authors = _make_authors(rng, n_authors + n_holdout_authors, taken, pools)
    facts = ATTRIBUTES[:facts_per_author]
    items, holdout = [], []
    for i, author in enumerate(authors):
        its = _author_items(rng, i, author.name, author.attributes, facts, pools, n_perturbed)
        (items if i < n_authors else holdout).extend(its)
    wf = world_facts(np.random.default_rng(seed + 1))
    ra = real_author_facts(np.random.default_rng(seed + 2))
    return Benchmark(authors=authors[:n_authors], items=items, world_facts=wf[:n_world] if n_world else wf,
                     real_authors=ra[:n_real] if n_real else ra, holdout=holdout, seed=seed,
                     facts_per_author=facts_per_author)


def eval_subset(items: Sequence[QAItem], n: int | None, seed: int = 0) -> list[QAItem]:
    """At most ``n`` items, a seeded sample in the original order (TOFU evaluates the first 300 of its sets)."""
    items = list(items)
    if n is None or n >= len(items):
        return items
    idx = np.sort(np.random.default_rng(seed).choice(len(items), size=n, replace=False))
    return [items[i] for i in idx]


# ---------------------------------------------------------------------------------------------- the real TOFU


def load_tofu(forget_split: str = "forget10", cache_dir: str | None = None) -> dict[str, list[QAItem]]:
    """The real TOFU from the hub (``locuslab/TOFU`` through ``datasets``): forget, retain, real-authors and
    world-facts sets with their paraphrased and perturbed answers, as :class:`QAItem` lists.

    Needs ``pip install datasets`` and network access (or a populated HF cache); raises a RuntimeError that says so.
    """
    if forget_split not in ("forget01", "forget05", "forget10"):
        raise ValueError(f"forget_split {forget_split!r}: use forget01, forget05 or forget10")
    try:
        from datasets import load_dataset
    except ImportError as err:
        raise RuntimeError("the real TOFU needs the `datasets` package and network access: pip install datasets; "
                           "offline, use lionsnb.unlearning.make_benchmark (the generated TOFU-shaped set)") from err
    retain_split = "retain" + str(100 - int(forget_split[-2:])).zfill(2)
    names = {"forget": f"{forget_split}_perturbed", "retain": "retain_perturbed",
             "real_authors": "real_authors_perturbed", "world_facts": "world_facts_perturbed",
             "forget_train": forget_split, "retain_train": retain_split}
    out: dict[str, list[QAItem]] = {}
    for key, name in names.items():
        try:
            ds = load_dataset(TOFU_HUB_ID, name, split="train", cache_dir=cache_dir)
        except Exception as err:  # offline: ConnectionError, OSError, DatasetNotFoundError, ...
            raise RuntimeError(f"could not load {TOFU_HUB_ID} ({name}): {type(err).__name__}: {err}. The real TOFU "
                               "needs network access to the Hugging Face hub (or a populated HF cache); offline, use "
                               "lionsnb.unlearning.make_benchmark (the generated TOFU-shaped set)") from err
        items = []
        for row in ds:
            base = row.get("paraphrased_answer") or row["answer"]
            perturbed = row.get("perturbed_answer") or []
            if isinstance(perturbed, str):
                perturbed = [perturbed]
            items.append(QAItem(row["question"], row["answer"], base, tuple(perturbed), -1, key))
        out[key] = items
    return out

