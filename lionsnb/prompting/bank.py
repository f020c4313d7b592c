"""The question bank: courses and assessment questions in the schema of Borges et al.'s public release.

Borges et al., "Could ChatGPT get an engineering degree?", PNAS 121(49) e2414955121 (2024), arXiv 2408.11841,
released their questions (``questions.json``) and courses (``courses.json``) in ``epfl-nlp/NLP4Education``,
folder ``data/``, under CC BY-NC-ND 4.0. Those files are not shipped here (no derivatives, non-commercial).
Instead this module offers:

* :func:`load_bank`: the project's own bank, ``data/prompting/{courses,questions}.json``, written for this
  project in the same schema (see ``data/prompting/README.md``);
* :func:`load_official`: the authors' files, for users who obtained them themselves;
* :func:`load_teacher_file`: a teacher's own questions, as a CSV (columns in :data:`TEACHER_COLUMNS`) or as JSON
  in our schema; :func:`write_teacher_file` writes either back;
* :func:`validate_bank`: a list of human-readable problems, empty when the bank is sound.

Conventions: ``mcq_answer_index`` holds **0-based** option indices everywhere in Python and JSON; only the
teacher CSV uses 1-based option numbers (``correct_options``), because that is how teachers count.
``numeric_tolerance`` is relative (0.01 = 1 %).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import asdict, dataclass, field, fields
from fractions import Fraction
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "prompting"
QUESTION_TYPES = ("mcq", "open_answer")
LANGUAGES = ("English", "French")
YEARS = ("bachelor", "master", "online")
DIFFICULTIES = ("easy", "medium", "hard")
BLOOM_LEVELS = ("remember", "understand", "apply", "analyze", "evaluate", "create")
#: the three kinds of question the study reports separately (Question.kind)
KINDS = ("mcq_single", "mcq_multiple", "open_answer")
#: separator of several correct option texts in ``question_answer`` of an MCQ
ANSWER_JOIN = "; "
OFFICIAL_RELEASE = ("the authors' public release, https://github.com/epfl-nlp/NLP4Education, folder data/ "
                    "(questions.json and courses.json; licence CC BY-NC-ND 4.0, which is why lionsnb does not ship "
                    "them: download them yourself and pass their paths)")

#: columns of a teacher's CSV, in order; see :func:`load_teacher_file`
TEACHER_COLUMNS = ("question_id", "course_id", "course_name", "course_program", "course_language", "course_year",
                   "question_type", "question_body", "question_options", "correct_options", "question_answer",
                   "numeric_answer", "numeric_tolerance", "explanation", "difficulty", "blooms_rating")
#: columns a teacher's CSV must have (course columns may be left out when a courses file is given)
TEACHER_REQUIRED = ("course_id", "question_type", "question_body")
TEACHER_COURSE_COLUMNS = ("course_name", "course_program", "course_language", "course_year")
#: separator of the options inside the CSV's ``question_options`` cell
OPTION_SEPARATOR = " || "


# ---------------------------------------------------------------------------------------------------------------
# data model


@dataclass(frozen=True)
class Course:
    """One course: its id, name, degree program, language of assessment and year (bachelor, master, online)."""

    course_id: str
    course_name: str
    course_program: str
    course_language: str
    course_year: str


@dataclass(frozen=True)
class Question:
    """One assessment question (the release's schema, with 0-based ``mcq_answer_index`` as a tuple).

    MCQ: ``question_options`` are the option texts without labels, ``mcq_answer_index`` the 0-based indices of the
    correct options, ``multiple_correct_answers`` False for MCQ-1 (one option to pick) and True for MCQ-n (pick all
    correct options), ``question_answer`` the correct option texts joined by ``"; "``. Open answers: no options, no
    indices, ``question_answer`` the gold answer text, and for a numeric gold answer ``numeric_answer`` (in the unit
    the body asks for) with a relative ``numeric_tolerance``.
    """

    question_id: str
    course_id: str
    question_type: str
    question_body: str
    question_options: tuple[str, ...]
    mcq_answer_index: tuple[int, ...]
    multiple_correct_answers: bool
    question_answer: str
    question_explanation: str = ""
    question_difficulty: str | None = None
    blooms_rating: str | None = None
    numeric_answer: float | None = None
    numeric_tolerance: float | None = None

    @property
    def is_mcq(self) -> bool:
        return self.question_type == "mcq"

    @property
    def kind(self) -> str:
        """``mcq_single`` (MCQ-1), ``mcq_multiple`` (MCQ-n) or ``open_answer``."""
        if self.question_type != "mcq":
            return "open_answer"
        return "mcq_multiple" if self.multiple_correct_answers else "mcq_single"

    def to_dict(self) -> dict[str, Any]:
        """The JSON record of this question (lists instead of tuples), keys in schema order."""
        record = asdict(self)
        record["question_options"] = list(self.question_options)
        record["mcq_answer_index"] = list(self.mcq_answer_index)
        return record


QUESTION_FIELDS = tuple(f.name for f in fields(Question))
COURSE_FIELDS = tuple(f.name for f in fields(Course))
_QUESTION_REQUIRED = ("question_id", "course_id", "question_type", "question_body")


@dataclass
class Bank:
    """Courses (by id) and questions, with a one-line description of where they came from.

    ``notes`` collects what a loader wants the reader to know (dropped records, ambiguous indices, ...).
    """

    courses: dict[str, Course]
    questions: list[Question]
    source: str
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.questions)

    def __iter__(self):
        return iter(self.questions)

    def __repr__(self) -> str:
        kinds = Counter(q.kind for q in self.questions)
        return (f"Bank({len(self)} questions, {len(self.courses)} courses, "
                + ", ".join(f"{k} {kinds[k]}" for k in KINDS) + f"; {self.source})")

    def course_of(self, q: Question) -> Course:
        try:
            return self.courses[q.course_id]
        except KeyError:
            raise KeyError(f"question {q.question_id!r} names course {q.course_id!r}, which this bank does not "
                           f"have (courses: {sorted(self.courses)})") from None

    def language_of(self, q: Question) -> str:
        return self.course_of(q).course_language

    def by_course(self) -> dict[str, list[Question]]:
        """Questions grouped by course id, courses in the order of ``self.courses``, bank order inside."""
        groups: dict[str, list[Question]] = {cid: [] for cid in self.courses}
        for q in self.questions:
            groups.setdefault(q.course_id, []).append(q)
        return groups

    def question(self, question_id: str) -> Question:
        for q in self.questions:
            if q.question_id == question_id:
                return q
        raise KeyError(f"no question {question_id!r} in this bank")

    def select(self, *, course_ids: str | Iterable[str] | None = None, question_type: str | Iterable[str] | None = None,
               language: str | None = None, n: int | None = None, seed: int = 0) -> Bank:
        """A sub-bank: filter by course ids, type and language, then (with ``n``) draw a stratified sample.

        ``question_type`` is ``mcq``, ``open_answer``, ``mcq_single`` or ``mcq_multiple`` (or several of them);
        ``language`` is ``English``/``French`` (``en``/``fr`` accepted). With ``n`` smaller than what is left, the
        sample is stratified: ``n`` is split over the kinds (MCQ-1, MCQ-n, open) in proportion to their sizes,
        then each kind's share over courses in proportion to the course sizes (largest remainders; leftover seats
        go first to courses with fewest questions drawn so far, then at random), and the questions of each
        (kind, course) cell are drawn uniformly. Everything random uses ``random.Random(seed)``, so the same seed
        gives the same sample. Questions keep their bank order; only courses that keep a question are kept.
        """
        qs = list(self.questions)
        filters = []
        if course_ids is not None:
            wanted = {course_ids} if isinstance(course_ids, str) else set(course_ids)
            unknown = sorted(wanted - set(self.courses))
            if unknown:
                raise ValueError(f"unknown course ids {unknown}; this bank has {sorted(self.courses)}")
            qs = [q for q in qs if q.course_id in wanted]
            filters.append(f"courses {sorted(wanted)}")
        if question_type is not None:
            types = {question_type} if isinstance(question_type, str) else set(question_type)
            bad = sorted(types - set(QUESTION_TYPES) - set(KINDS))
            if bad:
                raise ValueError(f"question_type {bad}: use mcq, open_answer, mcq_single or mcq_multiple")
            qs = [q for q in qs if q.question_type in types or q.kind in types]
            filters.append(f"type {sorted(types)}")
        if language is not None:
            lang = _normalise_language(language)
            if lang not in LANGUAGES:
                raise ValueError(f"language {language!r}: use one of {LANGUAGES} (or en/fr)")
            qs = [q for q in qs if self.language_of(q) == lang]
            filters.append(f"language {lang}")
        if n is not None:
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"n = {n!r}: give a non-negative integer (or None for all)")
            if n < len(qs):
                qs = _stratified_sample(qs, n, seed)
                filters.append(f"{n} stratified (seed {seed})")
        used = {q.course_id for q in qs}
        courses = {cid: c for cid, c in self.courses.items() if cid in used}
        source = self.source + (" | " + ", ".join(filters) if filters else "")
        return Bank(courses, qs, source, list(self.notes))

    def counts(self) -> dict[str, dict[str, int]]:
        """Tallies by course, kind, language, program, year, difficulty and Bloom level (for tables)."""
        out: dict[str, Counter] = {k: Counter() for k in
                                   ("course", "kind", "language", "program", "year", "difficulty", "bloom")}
        for q in self.questions:
            c = self.courses.get(q.course_id)
            out["course"][q.course_id] += 1
            out["kind"][q.kind] += 1
            out["difficulty"][q.question_difficulty or "none"] += 1
            out["bloom"][q.blooms_rating or "none"] += 1
            if c is not None:
                out["language"][c.course_language] += 1
                out["program"][c.course_program] += 1
                out["year"][c.course_year] += 1
        return {k: dict(v) for k, v in out.items()}


def _hamilton(sizes: dict[Hashable, int], m: int, rng: random.Random,
              penalty: Callable[[Hashable], int] = lambda key: 0) -> dict[Hashable, int]:
    """Split ``m`` seats over groups in proportion to ``sizes`` (largest remainders), never above a group's size.

    Leftover seats go to the groups with the smallest ``penalty`` first, then the largest remainder, then at random.
    """
    total = sum(sizes.values())
    keys = list(sizes)
    ties = {key: rng.random() for key in keys}
    quota = {key: Fraction(m * sizes[key], total) for key in keys}
    alloc = {key: min(math.floor(quota[key]), sizes[key]) for key in keys}
    left = m - sum(alloc.values())
    while left > 0:
        open_keys = [key for key in keys if alloc[key] < sizes[key]]
        open_keys.sort(key=lambda key: (penalty(key), -(quota[key] - alloc[key]), ties[key]))
        for key in open_keys[:left]:
            alloc[key] += 1
        left = m - sum(alloc.values())
    return alloc


def _stratified_sample(qs: list[Question], n: int, seed: int) -> list[Question]:
    rng = random.Random(seed)
    position = {id(q): i for i, q in enumerate(qs)}
    by_kind: dict[str, list[Question]] = defaultdict(list)
    for q in qs:
        by_kind[q.kind].append(q)
    kinds = [k for k in KINDS if k in by_kind]
    per_kind = _hamilton({k: len(by_kind[k]) for k in kinds}, n, rng)
    drawn_per_course: Counter = Counter()
    chosen: list[Question] = []
    for kind in kinds:
        if not per_kind[kind]:
            continue
        by_course: dict[str, list[Question]] = defaultdict(list)
        for q in by_kind[kind]:
            by_course[q.course_id].append(q)
        per_course = _hamilton({c: len(v) for c, v in by_course.items()}, per_kind[kind], rng,
                               penalty=lambda c: drawn_per_course[c])
        for course_id, k in per_course.items():
            if k:
                chosen.extend(rng.sample(by_course[course_id], k))
                drawn_per_course[course_id] += k
    return sorted(chosen, key=lambda q: position[id(q)])


# ---------------------------------------------------------------------------------------------------------------
# parsing our schema (JSON), strict: every problem names the file, the entry and the field


def _normalise_language(value: str) -> str:
    v = str(value).strip()
    table = {"en": "English", "eng": "English", "english": "English", "anglais": "English",
             "fr": "French", "fra": "French", "fre": "French", "french": "French", "français": "French",
             "francais": "French"}
    return table.get(v.lower(), v)


def _normalise_type(value: str) -> str:
    v = str(value).strip().lower().replace("-", "_").replace(" ", "_")
    if v in ("mcq", "multiple_choice", "mc", "mcq_1", "mcq_n", "qcm"):
        return "mcq"
    if v in ("open_answer", "open", "openanswer", "open_question", "free_text"):
        return "open_answer"
    return v


def _as_str(value: Any, where: str, name: str, *, optional: bool = False, allow_int: bool = False) -> str | None:
    if value is None and optional:
        return None
    if isinstance(value, str):
        return value
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"{where}: field {name!r} must be a string, got {value!r}")


def _as_number(value: Any, where: str, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: field {name!r} must be a number or null, got {value!r}")
    return float(value)


def course_from_dict(record: dict, where: str = "course") -> Course:
    """A :class:`Course` from a JSON record in our schema; ``ValueError`` naming ``where`` and the field."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected an object with fields {COURSE_FIELDS}, got {type(record).__name__}")
    unknown = sorted(set(record) - set(COURSE_FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; a course has {COURSE_FIELDS}")
    missing = [k for k in COURSE_FIELDS if k not in record]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")
    values = {k: _as_str(record[k], where, k, allow_int=(k == "course_id")) for k in COURSE_FIELDS}
    values["course_language"] = _normalise_language(values["course_language"])
    values["course_year"] = values["course_year"].strip().lower()
    return Course(**values)


def question_from_dict(record: dict, where: str = "question") -> Question:
    """A :class:`Question` from a JSON record in our schema (0-based ``mcq_answer_index``); strict on types."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected an object with fields {QUESTION_FIELDS}, got {type(record).__name__}")
    if "question_id" in record:
        where = f"{where} (question_id {record['question_id']!r})"
    unknown = sorted(set(record) - set(QUESTION_FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; a question has {QUESTION_FIELDS}")
    missing = [k for k in _QUESTION_REQUIRED if k not in record]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")
    options = record.get("question_options") or []
    if not isinstance(options, (list, tuple)) or not all(isinstance(o, str) for o in options):
        raise ValueError(f"{where}: field 'question_options' must be a list of strings, got {options!r}")
    index = record.get("mcq_answer_index")
    index = [] if index is None else ([index] if isinstance(index, int) and not isinstance(index, bool) else index)
    if not isinstance(index, (list, tuple)) or not all(isinstance(i, int) and not isinstance(i, bool) for i in index):
        raise ValueError(f"{where}: field 'mcq_answer_index' must be a list of 0-based integers, got {index!r}")
    multiple = record.get("multiple_correct_answers", False)
    if not isinstance(multiple, bool):
        raise ValueError(f"{where}: field 'multiple_correct_answers' must be true or false, got {multiple!r}")
    return Question(
        question_id=_as_str(record["question_id"], where, "question_id", allow_int=True),
        course_id=_as_str(record["course_id"], where, "course_id", allow_int=True),
        question_type=_normalise_type(_as_str(record["question_type"], where, "question_type")),
        question_body=_as_str(record["question_body"], where, "question_body"),
        question_options=tuple(options),
        mcq_answer_index=tuple(index),
        multiple_correct_answers=multiple,
        question_answer=_as_str(record.get("question_answer", ""), where, "question_answer", optional=True) or "",
        question_explanation=_as_str(record.get("question_explanation", ""), where, "question_explanation",
                                     optional=True) or "",
        question_difficulty=_as_str(record.get("question_difficulty"), where, "question_difficulty", optional=True),
        blooms_rating=_as_str(record.get("blooms_rating"), where, "blooms_rating", optional=True),
        numeric_answer=_as_number(record.get("numeric_answer"), where, "numeric_answer"),
        numeric_tolerance=_as_number(record.get("numeric_tolerance"), where, "numeric_tolerance"),
    )


def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def _records(data: Any, key: str, path: Path) -> list:
    if isinstance(data, dict) and isinstance(data.get(key), list):
        return data[key]
    if isinstance(data, list):
        return data
    raise ValueError(f"{path}: expected a JSON list of {key} (or an object with a {key!r} list)")


def _bank_from_records(course_records: list, question_records: list, source: str, course_where: str,
                       question_where: str) -> Bank:
    courses: dict[str, Course] = {}
    for i, rec in enumerate(course_records):
        course = course_from_dict(rec, f"{course_where}, entry {i}")
        if course.course_id in courses:
            raise ValueError(f"{course_where}, entry {i}: course_id {course.course_id!r} appears twice")
        courses[course.course_id] = course
    questions = [question_from_dict(rec, f"{question_where}, entry {i}") for i, rec in enumerate(question_records)]
    return Bank(courses, questions, source)


def load_bank(directory: str | os.PathLike | None = None) -> Bank:
    """The project's question bank, ``data/prompting/courses.json`` and ``questions.json`` (or those in ``directory``).

    Written for this project in the release's schema (see ``data/prompting/README.md``). Parsing is strict (types,
    unknown fields); run :func:`validate_bank` for the content checks.
    """
    folder = Path(directory) if directory is not None else DATA_DIR
    courses_path, questions_path = folder / "courses.json", folder / "questions.json"
    for path in (courses_path, questions_path):
        if not path.is_file():
            raise FileNotFoundError(f"the question bank file {path} is missing; the project ships it in "
                                    f"data/prompting/ (restore it with git checkout, or pass the folder that has it)")
    course_records = _records(_read_json(courses_path, "courses file"), "courses", courses_path)
    question_records = _records(_read_json(questions_path, "questions file"), "questions", questions_path)
    return _bank_from_records(course_records, question_records, f"lionsnb bank ({folder})",
                              courses_path.name, questions_path.name)


# ---------------------------------------------------------------------------------------------------------------
# validation


def _is_str(x: Any) -> bool:
    return isinstance(x, str)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def validate_bank(bank: Bank) -> list[str]:
    """Human-readable problems of a bank; ``[]`` when it is sound.

    Checks: field types; course ids matching their keys, known languages and years, non-empty names and programs;
    unique, non-empty question ids; known course ids and question types; non-empty bodies; MCQ with >= 2 distinct
    non-empty options, 0-based indices in range and without repeats, exactly one index for MCQ-1 and at least two
    for MCQ-n, ``question_answer`` equal to the correct option texts joined by ``"; "``; open answers without
    options or indices and with a gold answer; numeric gold answers finite, only on open answers, with a relative
    tolerance in (0, 1); difficulty and Bloom level from the allowed values (or None); every course has a question.
    """
    problems: list[str] = []
    if not isinstance(bank.courses, dict) or not isinstance(bank.questions, list):
        return ["bank.courses must be a dict of Course and bank.questions a list of Question"]
    for key, c in bank.courses.items():
        if not isinstance(c, Course):
            problems.append(f"course {key!r}: not a Course ({type(c).__name__})")
            continue
        bad = [f.name for f in fields(Course) if not _is_str(getattr(c, f.name))]
        if bad:
            problems.append(f"course {key!r}: field(s) {bad} must be strings")
            continue
        if c.course_id != key:
            problems.append(f"course {key!r}: stored under a key that differs from its course_id {c.course_id!r}")
        for name in ("course_id", "course_name", "course_program"):
            if not getattr(c, name).strip():
                problems.append(f"course {key!r}: empty {name}")
        if c.course_language not in LANGUAGES:
            problems.append(f"course {key!r}: course_language {c.course_language!r} is not one of {LANGUAGES}")
        if c.course_year not in YEARS:
            problems.append(f"course {key!r}: course_year {c.course_year!r} is not one of {YEARS}")

    seen: Counter = Counter()
    for i, q in enumerate(bank.questions):
        if not isinstance(q, Question):
            problems.append(f"question #{i}: not a Question ({type(q).__name__})")
            continue
        qid = q.question_id
        label = f"question {qid!r}" if _is_str(qid) and qid else f"question #{i}"
        type_errors = _type_problems(q)
        if type_errors:
            problems.extend(f"{label}: {e}" for e in type_errors)
            continue
        if not qid.strip():
            problems.append(f"{label}: empty question_id")
        seen[qid] += 1
        if q.course_id not in bank.courses:
            problems.append(f"{label}: unknown course_id {q.course_id!r}")
        if q.question_type not in QUESTION_TYPES:
            problems.append(f"{label}: question_type {q.question_type!r} is not one of {QUESTION_TYPES}")
        if not q.question_body.strip():
            problems.append(f"{label}: empty question_body")
        if q.question_type == "mcq":
            problems.extend(f"{label}: {p}" for p in _mcq_problems(q))
        elif q.question_type == "open_answer":
            if q.question_options or q.mcq_answer_index:
                problems.append(f"{label}: an open answer has no options or mcq_answer_index")
            if q.multiple_correct_answers:
                problems.append(f"{label}: multiple_correct_answers is only for MCQ")
            if not q.question_answer.strip():
                problems.append(f"{label}: open answer without a gold answer (question_answer is empty)")
        problems.extend(f"{label}: {p}" for p in _numeric_problems(q))
        if q.question_difficulty is not None and q.question_difficulty not in DIFFICULTIES:
            problems.append(f"{label}: question_difficulty {q.question_difficulty!r} is not one of {DIFFICULTIES}")
        if q.blooms_rating is not None and q.blooms_rating not in BLOOM_LEVELS:
            problems.append(f"{label}: blooms_rating {q.blooms_rating!r} is not one of {BLOOM_LEVELS}")
    for qid, k in seen.items():
        if k > 1:
            problems.append(f"question id {qid!r} appears {k} times (ids must be unique)")
    used = {q.course_id for q in bank.questions if isinstance(q, Question)}
    for key in bank.courses:
        if key not in used:
            problems.append(f"course {key!r} has no questions")
    return problems


def _type_problems(q: Question) -> list[str]:
    out = []
    for name in ("question_id", "course_id", "question_type", "question_body", "question_answer",
                 "question_explanation"):
        if not _is_str(getattr(q, name)):
            out.append(f"field {name!r} must be a string, got {getattr(q, name)!r}")
    for name in ("question_difficulty", "blooms_rating"):
        value = getattr(q, name)
        if value is not None and not _is_str(value):
            out.append(f"field {name!r} must be a string or None, got {value!r}")
    if not isinstance(q.question_options, tuple) or not all(_is_str(o) for o in q.question_options):
        out.append(f"field 'question_options' must be a tuple of strings, got {q.question_options!r}")
    if not isinstance(q.mcq_answer_index, tuple) or not all(_is_int(i) for i in q.mcq_answer_index):
        out.append(f"field 'mcq_answer_index' must be a tuple of 0-based ints, got {q.mcq_answer_index!r}")
    if not isinstance(q.multiple_correct_answers, bool):
        out.append(f"field 'multiple_correct_answers' must be a bool, got {q.multiple_correct_answers!r}")
    for name in ("numeric_answer", "numeric_tolerance"):
        value = getattr(q, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            out.append(f"field {name!r} must be a number or None, got {value!r}")
    return out


def _mcq_problems(q: Question) -> list[str]:
    out = []
    n = len(q.question_options)
    if n < 2:
        out.append(f"an MCQ needs at least 2 options, has {n}")
    if any(not o.strip() for o in q.question_options):
        out.append("empty option text")
    dup = [o for o, k in Counter(o.strip() for o in q.question_options).items() if k > 1 and o]
    if dup:
        out.append(f"duplicate options {dup}")
    if not q.mcq_answer_index:
        out.append("MCQ without a correct option (mcq_answer_index is empty)")
    bad = [i for i in q.mcq_answer_index if not 0 <= i < n]
    if bad:
        out.append(f"mcq_answer_index {list(bad)} out of range for {n} options (indices are 0-based: 0..{n - 1})")
    if len(set(q.mcq_answer_index)) != len(q.mcq_answer_index):
        out.append(f"mcq_answer_index {list(q.mcq_answer_index)} repeats an index")
    k = len(set(q.mcq_answer_index))
    if not q.multiple_correct_answers and k != 1:
        out.append(f"MCQ-1 (multiple_correct_answers false) must have exactly 1 correct option, has {k}")
    if q.multiple_correct_answers and k < 2:
        out.append(f"MCQ-n (multiple_correct_answers true) must have at least 2 correct options, has {k}")
    if not bad and q.mcq_answer_index:
        expected = ANSWER_JOIN.join(q.question_options[i] for i in q.mcq_answer_index)
        if q.question_answer != expected:
            out.append(f"question_answer {q.question_answer!r} differs from the correct option text(s) "
                       f"{expected!r}")
    return out


def _numeric_problems(q: Question) -> list[str]:
    out = []
    value, tol = q.numeric_answer, q.numeric_tolerance
    if value is not None:
        if q.question_type != "open_answer":
            out.append("numeric_answer is only for open answers")
        if not math.isfinite(value):
            out.append(f"numeric_answer {value!r} is not finite")
        if tol is None:
            out.append("numeric_answer without numeric_tolerance (give a relative tolerance, e.g. 0.01)")
    if tol is not None:
        if value is None:
            out.append("numeric_tolerance without numeric_answer")
        if not (math.isfinite(tol) and 0 < tol < 1):
            out.append(f"numeric_tolerance {tol!r} must be a relative tolerance in (0, 1), e.g. 0.01 for 1 %")
    return out


# ---------------------------------------------------------------------------------------------------------------
# the authors' release


def load_official(questions_path: str | os.PathLike, courses_path: str | os.PathLike | None = None, *,
                  index_base: int = 0) -> Bank:
    """The authors' released ``questions.json`` and ``courses.json`` (obtain them yourself: :data:`OFFICIAL_RELEASE`).

    ``courses_path`` defaults to ``courses.json`` next to ``questions_path`` (a folder holding both also works).
    Reads the release schema: ``question_id, course_id`` (ints there, strings here), ``question_type``,
    ``question_body``, ``question_options``, ``question_sub_type`` (only used when ``multiple_correct_answers`` is
    missing), ``mcq_answer_index`` (an int or a list), ``question_answer`` (a string or a list), ``multiple_correct_
    answers``, and the optional ``question_explanation``, ``question_difficulty``, ``blooms_rating``; courses with
    ``course_id, course_name, course_program`` (null for some online courses: stored as ``"none"``),
    ``course_language, course_year``.

    **Indices are taken as 0-based** (``index_base=0``), as the release's own prompting code uses them (it labels
    option ``index + 1``). If a file's MCQ indices are all >= 1 and none is 0, that is ambiguous (1-based
    indices?): a warning is issued and a note added to ``bank.notes``; pass ``index_base=1`` to shift them.
    For an MCQ with valid indices, ``question_answer`` is rebuilt from the option texts (our convention).
    The release redacted some gold answers and courses: questions whose course is absent from ``courses.json`` are
    dropped (counted in ``bank.notes``); the rest is kept as is, so run :func:`validate_bank` to see what is missing.
    """
    qpath = Path(questions_path)
    if qpath.is_dir():
        qpath = qpath / "questions.json"
    cpath = Path(courses_path) if courses_path is not None else qpath.with_name("courses.json")
    if cpath.is_dir():
        cpath = cpath / "courses.json"
    for path, what in ((qpath, "questions"), (cpath, "courses")):
        if not path.is_file():
            raise FileNotFoundError(f"official {what} file not found: {path}. These files come from "
                                    f"{OFFICIAL_RELEASE}.")
    if index_base not in (0, 1):
        raise ValueError(f"index_base = {index_base!r}: use 0 (the release's convention) or 1")
    notes: list[str] = []
    courses: dict[str, Course] = {}
    for i, rec in enumerate(_records(_read_json(cpath, "official courses file"), "courses", cpath)):
        where = f"{cpath.name}, entry {i}"
        if not isinstance(rec, dict) or "course_id" not in rec:
            raise ValueError(f"{where}: expected an object with a course_id")
        cid = str(rec["course_id"])
        program = rec.get("course_program")
        courses[cid] = Course(course_id=cid, course_name=str(rec.get("course_name") or cid),
                              course_program=str(program) if program not in (None, "") else "none",
                              course_language=_normalise_language(rec.get("course_language") or ""),
                              course_year=str(rec.get("course_year") or "").strip().lower())
    records = _records(_read_json(qpath, "official questions file"), "questions", qpath)
    questions: list[Question] = []
    raw_indices: list[int] = []
    dropped: Counter = Counter()
    for i, rec in enumerate(records):
        where = f"{qpath.name}, entry {i}"
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: expected an object, got {type(rec).__name__}")
        missing = [k for k in ("question_id", "course_id", "question_type", "question_body") if k not in rec]
        if missing:
            raise ValueError(f"{where}: missing field(s) {missing}")
        cid = str(rec["course_id"])
        if cid not in courses:
            dropped[cid] += 1
            continue
        qtype = _normalise_type(rec["question_type"])
        options = _official_options(rec.get("question_options"), where) if qtype == "mcq" else ()
        index = _official_index(rec.get("mcq_answer_index"), where) if qtype == "mcq" else ()
        raw_indices.extend(index)
        index = tuple(i - index_base for i in index)
        multiple = _official_multiple(rec, index)
        answer = rec.get("question_answer")
        if isinstance(answer, list):
            answer = ANSWER_JOIN.join(str(a) for a in answer)
        answer = "" if answer is None else str(answer)
        if qtype == "mcq" and index and all(0 <= j < len(options) for j in index):
            answer = ANSWER_JOIN.join(options[j] for j in index)
        difficulty = rec.get("question_difficulty")
        bloom = rec.get("blooms_rating")
        questions.append(Question(
            question_id=str(rec["question_id"]), course_id=cid, question_type=qtype,
            question_body=str(rec["question_body"] or ""), question_options=options, mcq_answer_index=index,
            multiple_correct_answers=multiple, question_answer=answer,
            question_explanation=str(rec.get("question_explanation") or ""),
            question_difficulty=str(difficulty).strip().lower() if difficulty not in (None, "") else None,
            blooms_rating=str(bloom).strip().lower() if bloom not in (None, "") else None))
    if dropped:
        notes.append(f"dropped {sum(dropped.values())} question(s) whose course is not in {cpath.name} "
                     f"(course ids {sorted(dropped)}; the release removed some courses)")
    if index_base == 0 and raw_indices and min(raw_indices) >= 1:
        message = (f"{qpath}: every mcq_answer_index is >= 1 and none is 0; they were read as 0-based (the "
                   "release's convention), but they may be 1-based: check a few questions by hand and pass "
                   "index_base=1 if so")
        warnings.warn(message, stacklevel=2)
        notes.append(message)
    return Bank(courses, questions, f"official release ({qpath})", notes)


def _official_options(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                pass
        if isinstance(value, str):
            return tuple(line.strip() for line in value.splitlines() if line.strip())
    if isinstance(value, (list, tuple)):
        return tuple(str(o) for o in value)
    raise ValueError(f"{where}: question_options must be a list of strings, got {value!r}")


def _official_index(value: Any, where: str) -> tuple[int, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"{where}: mcq_answer_index {value!r} is neither an int nor a list of ints") from None
    if _is_int(value):
        return (value,)
    if isinstance(value, (list, tuple)) and all(_is_int(v) or (isinstance(v, str) and v.strip().isdigit())
                                                for v in value):
        return tuple(int(v) for v in value)
    raise ValueError(f"{where}: mcq_answer_index {value!r} is neither an int nor a list of ints")


def _official_multiple(rec: dict, index: tuple[int, ...]) -> bool:
    if rec.get("question_type") is not None and _normalise_type(rec["question_type"]) != "mcq":
        return False
    value = rec.get("multiple_correct_answers")
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    if _is_int(value):
        return value != 0
    sub = rec.get("question_sub_type")
    if _is_int(sub):
        return sub > 1
    if isinstance(sub, str) and sub.strip():
        s = sub.strip().lower()
        return "multi" in s or (s.isdigit() and int(s) > 1)
    return len(index) > 1


# ---------------------------------------------------------------------------------------------------------------
# a teacher's file


def load_teacher_file(path: str | os.PathLike, courses_path: str | os.PathLike | None = None) -> Bank:
    """A teacher's own questions: a CSV (``.csv``) or a JSON file in our schema (``.json``).

    **CSV**: one row per question, a header row with the columns of :data:`TEACHER_COLUMNS`:

    * ``question_id`` (blank: ``<course_id>-r<row>``), ``course_id`` and the course columns ``course_name``,
      ``course_program``, ``course_language`` (English/French), ``course_year`` (bachelor/master/online), repeated
      on each row of a course (identical on each); they may be left out when ``courses_path`` (a ``courses.json``
      in our schema) is given;
    * ``question_type``: ``mcq`` or ``open_answer``; ``question_body``;
    * ``question_options``: the option texts separated by ``" || "``;
    * ``correct_options``: the numbers of the correct options, **1-based** (the first option is 1), separated by
      ``","``; several numbers make an MCQ-n (an optional column ``multiple_correct_answers`` true/false
      overrides this);
    * ``question_answer``: the gold answer (required for open answers; for MCQ derived from the options when blank);
    * ``numeric_answer`` and ``numeric_tolerance`` (relative, e.g. ``0.01`` or ``1%``) for a numeric gold answer;
    * ``explanation``, ``difficulty`` (easy/medium/hard), ``blooms_rating`` (remember ... create), all optional.

    UTF-8 (a spreadsheet's byte-order mark is fine); the delimiter may be ``,``, ``;`` or a tab. Rows are numbered
    as a spreadsheet shows them (header = row 1). **JSON**: ``{"courses": [...], "questions": [...]}`` with the
    fields of :class:`Course` and :class:`Question` (0-based ``mcq_answer_index``), or a list of questions with
    ``courses_path``. Every problem is reported at once in a ``ValueError`` naming the row (or entry) and column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"teacher file not found: {path} (a .csv with the columns {', '.join(TEACHER_COLUMNS)}"
                                f", or a .json in the bank's schema; example: {DATA_DIR / 'example_teacher.csv'})")
    extra_courses: dict[str, Course] = {}
    if courses_path is not None:
        cpath = Path(courses_path)
        records = _records(_read_json(cpath, "courses file"), "courses", cpath)
        for i, rec in enumerate(records):
            course = course_from_dict(rec, f"{cpath.name}, entry {i}")
            extra_courses[course.course_id] = course
    suffix = path.suffix.lower()
    if suffix == ".json":
        bank = _teacher_json(path, extra_courses)
    elif suffix in (".csv", ".tsv", ".txt"):
        bank = _teacher_csv(path, extra_courses)
    else:
        raise ValueError(f"{path}: unknown file type {suffix!r}; give a .csv or a .json file")
    problems = validate_bank(bank)
    if problems:
        raise ValueError(f"{path}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return bank


def _teacher_json(path: Path, extra_courses: dict[str, Course]) -> Bank:
    data = _read_json(path, "teacher file")
    if isinstance(data, dict):
        unknown = sorted(set(data) - {"courses", "questions"})
        if unknown or not isinstance(data.get("questions"), list):
            raise ValueError(f"{path}: expected {{\"courses\": [...], \"questions\": [...]}}"
                             + (f" (unknown keys {unknown})" if unknown else ""))
        course_records, question_records = data.get("courses") or [], data["questions"]
    elif isinstance(data, list):
        course_records, question_records = [], data
    else:
        raise ValueError(f"{path}: expected an object with courses and questions, or a list of questions")
    if not isinstance(course_records, list):
        raise ValueError(f"{path}: 'courses' must be a list")
    bank = _bank_from_records(course_records, question_records, f"teacher file ({path})",
                              f"{path.name} courses", f"{path.name} questions")
    used = {q.course_id for q in bank.questions}
    for cid, course in extra_courses.items():
        if cid in used:
            bank.courses.setdefault(cid, course)
    return bank


def _parse_number(text: str, where: str, column: str, problems: list[str]) -> float | None:
    s = text.strip().replace("\u2009", "").replace(" ", "")
    if not s:
        return None
    percent = s.endswith("%")
    if percent:
        s = s[:-1]
    if "," in s and "." not in s:
        s = s.replace(",", ".")
    try:
        value = float(s)
    except ValueError:
        problems.append(f"{where}, column {column!r}: {text!r} is not a number")
        return None
    if not math.isfinite(value):
        problems.append(f"{where}, column {column!r}: {text!r} is not a finite number")
        return None
    return value / 100 if percent else value


def _teacher_csv(path: Path, extra_courses: dict[str, Course]) -> Bank:
    text = path.read_text(encoding="utf-8-sig")
    first = text.splitlines()[0] if text.strip() else ""
    delimiter = max((",", ";", "\t"), key=first.count) if first else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise ValueError(f"{path}: empty file; the first row must name the columns ({', '.join(TEACHER_COLUMNS)})")
    reader.fieldnames = header
    allowed = set(TEACHER_COLUMNS) | {"multiple_correct_answers"}
    unknown = [h for h in header if h not in allowed]
    missing = [c for c in TEACHER_REQUIRED if c not in header]
    if not extra_courses:
        missing += [c for c in TEACHER_COURSE_COLUMNS if c not in header]
    if unknown or missing:
        found = ([f"unknown column(s) {unknown}"] if unknown else []) + \
            ([f"missing column(s) {missing}"] if missing else [])
        raise ValueError(f"{path}, row 1 (header): " + "; ".join(found)
                         + f". The columns are: {', '.join(TEACHER_COLUMNS)}")
    problems: list[str] = []
    courses: dict[str, Course] = dict(extra_courses)
    course_rows: dict[str, int] = {}
    questions: list[Question] = []
    for row_number, row in enumerate(reader, start=2):
        if None in row:
            problems.append(f"row {row_number}: more cells than columns (a delimiter inside an unquoted cell?)")
            continue
        cell = {k: (v or "").strip() for k, v in row.items()}
        if not any(cell.values()):
            continue
        where = f"row {row_number}"
        for column in TEACHER_REQUIRED:
            if not cell.get(column):
                problems.append(f"{where}, column {column!r}: empty")
        cid = cell.get("course_id", "")
        course_values = {c: cell.get(c, "") for c in TEACHER_COURSE_COLUMNS}
        if cid and any(course_values.values()):
            course = Course(cid, course_values["course_name"], course_values["course_program"],
                            _normalise_language(course_values["course_language"]),
                            course_values["course_year"].lower())
            for column in TEACHER_COURSE_COLUMNS:
                if not course_values[column]:
                    problems.append(f"{where}, column {column!r}: empty (fill the course columns on every row, "
                                    f"or pass a courses file)")
            if cid in courses and cid in course_rows and courses[cid] != course:
                diff = [c for c in TEACHER_COURSE_COLUMNS if getattr(courses[cid], c) != getattr(course, c)]
                problems.append(f"{where}, column(s) {diff}: course {cid!r} differs from row {course_rows[cid]}")
            elif cid not in course_rows:
                courses[cid] = course
                course_rows[cid] = row_number
        elif cid and cid not in courses:
            problems.append(f"{where}, columns {list(TEACHER_COURSE_COLUMNS)}: course {cid!r} is not described "
                            f"(fill the course columns or pass a courses file)")
        qtype = _normalise_type(cell.get("question_type", ""))
        if cell.get("question_type") and qtype not in QUESTION_TYPES:
            problems.append(f"{where}, column 'question_type': {cell['question_type']!r} is not mcq or open_answer")
        options = tuple(o.strip() for o in cell.get("question_options", "").split(OPTION_SEPARATOR.strip())) \
            if cell.get("question_options") else ()
        index: tuple[int, ...] = ()
        multiple = False
        answer = cell.get("question_answer", "")
        if qtype == "mcq":
            if len(options) < 2:
                problems.append(f"{where}, column 'question_options': an MCQ needs at least 2 options separated "
                                f"by {OPTION_SEPARATOR!r}")
            numbers = [p.strip() for p in cell.get("correct_options", "").replace(";", ",").split(",") if p.strip()]
            if not numbers:
                problems.append(f"{where}, column 'correct_options': empty; give the 1-based numbers of the correct "
                                f"options, e.g. 2 or 1,3")
            parsed = []
            for p in numbers:
                if not p.isdigit():
                    problems.append(f"{where}, column 'correct_options': {p!r} is not an option number (1-based)")
                elif not 1 <= int(p) <= len(options):
                    problems.append(f"{where}, column 'correct_options': option {p} does not exist; the question has "
                                    f"{len(options)} options, numbered 1 to {len(options)}")
                else:
                    parsed.append(int(p) - 1)
            index = tuple(parsed)
            flag = cell.get("multiple_correct_answers", "").lower()
            if flag in ("true", "yes", "1", "vrai", "oui"):
                multiple = True
            elif flag in ("false", "no", "0", "faux", "non"):
                multiple = False
            elif flag:
                problems.append(f"{where}, column 'multiple_correct_answers': {flag!r} is not true or false")
            else:
                multiple = len(index) > 1
            if index and len(index) == len(numbers):
                derived = ANSWER_JOIN.join(options[i] for i in index)
                if answer and answer != derived:
                    problems.append(f"{where}, column 'question_answer': {answer!r} differs from the correct option "
                                    f"text(s) {derived!r} (leave it blank for an MCQ)")
                answer = derived
        elif qtype == "open_answer":
            if cell.get("question_options") or cell.get("correct_options"):
                problems.append(f"{where}, columns 'question_options'/'correct_options': an open answer has none")
            if not answer:
                problems.append(f"{where}, column 'question_answer': an open answer needs a gold answer")
        numeric = _parse_number(cell.get("numeric_answer", ""), where, "numeric_answer", problems)
        tolerance = _parse_number(cell.get("numeric_tolerance", ""), where, "numeric_tolerance", problems)
        if numeric is not None and tolerance is None:
            problems.append(f"{where}, column 'numeric_tolerance': empty but numeric_answer is set (give a relative "
                            f"tolerance such as 0.01 or 1%)")
        if tolerance is not None and not 0 < tolerance < 1:
            problems.append(f"{where}, column 'numeric_tolerance': {tolerance!r} must be relative, in (0, 1)")
        difficulty = cell.get("difficulty", "").lower() or None
        if difficulty is not None and difficulty not in DIFFICULTIES:
            problems.append(f"{where}, column 'difficulty': {difficulty!r} is not one of {DIFFICULTIES}")
        bloom = cell.get("blooms_rating", "").lower() or None
        if bloom is not None and bloom not in BLOOM_LEVELS:
            problems.append(f"{where}, column 'blooms_rating': {bloom!r} is not one of {BLOOM_LEVELS}")
        questions.append(Question(
            question_id=cell.get("question_id") or f"{cid}-r{row_number}", course_id=cid, question_type=qtype,
            question_body=cell.get("question_body", ""), question_options=options if qtype == "mcq" else (),
            mcq_answer_index=index, multiple_correct_answers=multiple, question_answer=answer,
            question_explanation=cell.get("explanation", ""), question_difficulty=difficulty, blooms_rating=bloom,
            numeric_answer=numeric, numeric_tolerance=tolerance))
    ids = Counter(q.question_id for q in questions)
    problems += [f"column 'question_id': {qid!r} appears {k} times" for qid, k in ids.items() if k > 1]
    if problems:
        raise ValueError(f"{path}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    if not questions:
        raise ValueError(f"{path}: no question rows below the header")
    used = {q.course_id for q in questions}
    courses = {cid: c for cid, c in courses.items() if cid in used or cid in course_rows}
    return Bank(courses, questions, f"teacher file ({path})")


def write_teacher_file(bank: Bank, path: str | os.PathLike) -> Path:
    """Write ``bank`` as a teacher CSV (``.csv``, 1-based ``correct_options``) or JSON (``.json``, our schema).

    Refuses to overwrite an existing file. Option texts must not contain ``" || "`` for the CSV.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; choose a new name (nothing is overwritten)")
    if path.suffix.lower() == ".json":
        data = {"courses": [asdict(c) for c in bank.courses.values()], "questions": [q.to_dict() for q in bank]}
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return path
    if path.suffix.lower() != ".csv":
        raise ValueError(f"{path}: give a .csv or a .json name")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(TEACHER_COLUMNS) + ["multiple_correct_answers"],
                            lineterminator="\n")
    writer.writeheader()
    for q in bank:
        if any(OPTION_SEPARATOR.strip() in o for o in q.question_options):
            raise ValueError(f"question {q.question_id!r}: an option contains {OPTION_SEPARATOR.strip()!r}, "
                             f"which the CSV uses to separate options; write JSON instead")
        c = bank.course_of(q)
        writer.writerow({
            "question_id": q.question_id, "course_id": q.course_id, "course_name": c.course_name,
            "course_program": c.course_program, "course_language": c.course_language, "course_year": c.course_year,
            "question_type": q.question_type, "question_body": q.question_body,
            "question_options": OPTION_SEPARATOR.join(q.question_options),
            "correct_options": ",".join(str(i + 1) for i in q.mcq_answer_index),
            "question_answer": q.question_answer,
            "numeric_answer": "" if q.numeric_answer is None else repr(q.numeric_answer),
            "numeric_tolerance": "" if q.numeric_tolerance is None else repr(q.numeric_tolerance),
            "explanation": q.question_explanation, "difficulty": q.question_difficulty or "",
            "blooms_rating": q.blooms_rating or "",
            "multiple_correct_answers": ("true" if q.multiple_correct_answers else "false") if q.is_mcq else ""})
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


__all__ = [
    "Bank", "Course", "Question", "load_bank", "validate_bank", "load_official", "load_teacher_file",
    "write_teacher_file", "question_from_dict", "course_from_dict", "DATA_DIR", "QUESTION_TYPES", "LANGUAGES",
    "YEARS", "DIFFICULTIES", "BLOOM_LEVELS", "KINDS", "TEACHER_COLUMNS", "OPTION_SEPARATOR", "OFFICIAL_RELEASE",
]
