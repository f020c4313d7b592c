"""The question bank: the shipped bank is sound and large enough, validation catches each kind of error, and the
loaders read the official release format and a teacher's CSV/JSON with clear errors."""
from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from dataclasses import replace

import pytest

from lionsnb.prompting.bank import (
    BLOOM_LEVELS,
    DATA_DIR,
    DIFFICULTIES,
    Bank,
    Course,
    Question,
    load_bank,
    load_official,
    load_teacher_file,
    validate_bank,
    write_teacher_file,
)

EXAMPLE_CSV = DATA_DIR / "example_teacher.csv"


@pytest.fixture(scope="module")
def bank() -> Bank:
    return load_bank()


# ------------------------------------------------------------------------------------------------ the shipped bank


def test_shipped_bank_validates(bank):
    assert validate_bank(bank) == []


def test_shipped_bank_meets_the_issue_counts(bank):
    kinds = Counter(q.kind for q in bank)
    courses = {bank.course_of(q).course_id for q in bank}
    programs = {c.course_program for c in bank.courses.values()}
    years = {c.course_year for c in bank.courses.values()}
    languages = Counter(bank.language_of(q) for q in bank)
    numeric = [q for q in bank if q.numeric_answer is not None]
    assert len(bank) >= 200 and len(courses) >= 10 and len(programs) >= 3
    assert {"bachelor", "master"} <= years
    assert languages["French"] >= 20 and sum(c.course_language == "French" for c in bank.courses.values()) >= 2
    assert kinds["mcq_single"] > 0 and kinds["mcq_multiple"] > 0 and kinds["open_answer"] > 0
    assert len(numeric) >= 25
    for course_id, qs in bank.by_course().items():
        assert 15 <= len(qs) <= 25, f"{course_id}: {len(qs)} questions"
    # roughly 45 % MCQ-1, 20 % MCQ-n, 35 % open
    for kind, share in (("mcq_single", 0.45), ("mcq_multiple", 0.20), ("open_answer", 0.35)):
        assert abs(kinds[kind] / len(bank) - share) < 0.06, (kind, kinds[kind])
    assert set(Counter(q.question_difficulty for q in bank)) == set(DIFFICULTIES)
    assert len({q.blooms_rating for q in bank}) >= 5 and {q.blooms_rating for q in bank} <= set(BLOOM_LEVELS)


def test_shipped_mcq_structure(bank):
    ids = [q.question_id for q in bank]
    assert len(ids) == len(set(ids))
    for q in bank:
        if q.kind == "mcq_single":
            assert len(q.question_options) == 4 and len(q.mcq_answer_index) == 1, q.question_id
        elif q.kind == "mcq_multiple":
            assert 4 <= len(q.question_options) <= 5 and 2 <= len(q.mcq_answer_index) <= 3, q.question_id
        else:
            assert not q.question_options and not q.mcq_answer_index and q.question_answer.strip(), q.question_id
        assert all(0 <= i < len(q.question_options) for i in q.mcq_answer_index)
        assert q.question_explanation.strip(), q.question_id
    # the correct option of MCQ-1 is not always in the same place
    positions = Counter(q.mcq_answer_index[0] for q in bank if q.kind == "mcq_single")
    assert max(positions.values()) < 0.4 * sum(positions.values())


_FR = set("le la les des un une est de du que quelle quel quelles quels pour dans sur avec sont et en au aux sa son "
          "ses soit il elle vaut lorsque".split())
_EN = set("the is of what which and are for with in an to its by that this at from".split())


def _language_votes(text: str) -> tuple[int, int]:
    words = re.findall(r"[a-zàâçéèêëîïôûùüÿœ]+", text.lower())
    return sum(w in _FR for w in words), sum(w in _EN for w in words)


def test_french_courses_are_written_in_french_and_the_others_in_english(bank):
    for q in bank:
        parts = [q.question_body, q.question_explanation]
        parts.append(" ".join(q.question_options) if q.is_mcq else q.question_answer)
        for part in parts:
            fr, en = _language_votes(part)
            if not fr and not en:
                continue   # formulas or numbers only
            if bank.language_of(q) == "French":
                assert fr > en, f"{q.question_id} (French course) reads as English: {part[:80]!r}"
            else:
                assert en > fr, f"{q.question_id} (English course) reads as French: {part[:80]!r}"


def _numbers(text: str) -> list[float]:
    return [float(m.replace(",", ".").replace("−", "-")) for m in re.findall(r"[−-]?\d+(?:[.,]\d+)?", text)]


def test_numeric_gold_text_states_the_numeric_answer(bank):
    """The gold text and numeric_answer agree (catches a gold text edited without its number, or vice versa)."""
    for q in bank:
        if q.numeric_answer is None:
            continue
        tol = max(q.numeric_tolerance, 0.006)
        close = [x for x in _numbers(q.question_answer) if abs(x - q.numeric_answer) <= tol * abs(q.numeric_answer)]
        assert close, f"{q.question_id}: no number within {tol:.1%} of {q.numeric_answer} in {q.question_answer!r}"


def test_mcq_gold_text_is_the_correct_options(bank):
    for q in bank:
        if q.is_mcq:
            assert q.question_answer == "; ".join(q.question_options[i] for i in q.mcq_answer_index)
            assert all("; " not in o and "||" not in o for o in q.question_options), q.question_id


# ------------------------------------------------------------------------------------------------ selection


def test_select_filters(bank):
    french = bank.select(language="fr")
    assert len(french) > 0 and all(bank.language_of(q) == "French" for q in french)
    assert set(french.courses) == {c.course_id for c in bank.courses.values() if c.course_language == "French"}
    open_cs = bank.select(course_ids=["CS-101", "CS-206"], question_type="open_answer")
    assert {q.course_id for q in open_cs} == {"CS-101", "CS-206"} and all(not q.is_mcq for q in open_cs)
    assert all(q.kind == "mcq_multiple" for q in bank.select(question_type="mcq_multiple"))
    with pytest.raises(ValueError, match="unknown course ids"):
        bank.select(course_ids=["NOPE-1"])
    with pytest.raises(ValueError):
        bank.select(question_type="essay")


def test_select_is_stratified_and_seeded(bank):
    n = 26
    a, b, c = (bank.select(n=n, seed=s) for s in (0, 0, 1))
    assert [q.question_id for q in a] == [q.question_id for q in b]
    assert len(a) == n and validate_bank(a) == []
    assert any([q.question_id for q in bank.select(n=n, seed=s)] != [q.question_id for q in a] for s in (1, 2, 3))
    # kinds in proportion (within one question), every course represented, bank order kept
    total = Counter(q.kind for q in bank)
    got = Counter(q.kind for q in a)
    for kind in total:
        assert abs(got[kind] - n * total[kind] / len(bank)) <= 1, (kind, got)
    assert {q.course_id for q in a} == set(bank.courses)
    order = {q.question_id: i for i, q in enumerate(bank)}
    assert [order[q.question_id] for q in a] == sorted(order[q.question_id] for q in a)
    # small samples still spread over the kinds; n larger than the bank returns everything
    assert {q.kind for q in bank.select(n=3, seed=5)} == {"mcq_single", "mcq_multiple", "open_answer"}
    assert len(bank.select(n=10 * len(bank))) == len(bank)
    assert len(bank.select(language="French", n=5, seed=2)) == 5


# ------------------------------------------------------------------------------------------------ validation


def _doctor(bank: Bank, question_id: str, **changes) -> Bank:
    questions = [replace(q, **changes) if q.question_id == question_id else q for q in bank.questions]
    return Bank(dict(bank.courses), questions, "doctored")


def _first(bank: Bank, kind: str) -> Question:
    return next(q for q in bank if q.kind == kind and q.numeric_answer is None)


@pytest.mark.parametrize("case", [
    "index_out_of_range", "mcq1_two_answers", "mcqn_one_answer", "negative_index", "unknown_course", "open_no_gold",
    "numeric_no_tolerance", "tolerance_out_of_range", "options_as_list", "bad_difficulty", "bad_bloom", "bad_type",
    "answer_text_mismatch", "empty_body", "open_with_options", "numeric_on_mcq", "single_option"])
def test_validate_bank_catches_each_error(bank, case):
    mcq1, mcqn, open_q = _first(bank, "mcq_single"), _first(bank, "mcq_multiple"), _first(bank, "open_answer")
    doctored = {
        "index_out_of_range": (mcq1, dict(mcq_answer_index=(7,)), "out of range"),
        "mcq1_two_answers": (mcq1, dict(mcq_answer_index=(0, 1), question_answer="; ".join(mcq1.question_options[:2])),
                             "exactly 1"),
        "mcqn_one_answer": (mcqn, dict(mcq_answer_index=(0,), question_answer=mcqn.question_options[0]),
                            "at least 2"),
        "negative_index": (mcq1, dict(mcq_answer_index=(-1,)), "out of range"),
        "unknown_course": (open_q, dict(course_id="XX-999"), "unknown course_id"),
        "open_no_gold": (open_q, dict(question_answer="  "), "without a gold answer"),
        "numeric_no_tolerance": (open_q, dict(numeric_answer=3.0), "without numeric_tolerance"),
        "tolerance_out_of_range": (open_q, dict(numeric_answer=3.0, numeric_tolerance=5.0), "relative tolerance"),
        "options_as_list": (mcq1, dict(question_options=list(mcq1.question_options)), "must be a tuple"),
        "bad_difficulty": (mcq1, dict(question_difficulty="trivial"), "question_difficulty"),
        "bad_bloom": (mcq1, dict(blooms_rating="memorise"), "blooms_rating"),
        "bad_type": (open_q, dict(question_type="essay"), "question_type"),
        "answer_text_mismatch": (mcq1, dict(question_answer="something else"), "differs from the correct option"),
        "empty_body": (open_q, dict(question_body=""), "empty question_body"),
        "open_with_options": (open_q, dict(question_options=("a", "b")), "no options"),
        "numeric_on_mcq": (mcq1, dict(numeric_answer=1.0, numeric_tolerance=0.01), "only for open answers"),
        "single_option": (mcq1, dict(question_options=(mcq1.question_options[0],), mcq_answer_index=(0,),
                                     question_answer=mcq1.question_options[0]), "at least 2 options"),
    }
    q, changes, expected = doctored[case]
    problems = validate_bank(_doctor(bank, q.question_id, **changes))
    assert problems, case
    assert any(expected in p and q.question_id in p for p in problems), problems


def test_validate_bank_catches_bank_level_errors(bank):
    q = bank.questions[0]
    duplicated = Bank(dict(bank.courses), bank.questions + [q], "doctored")
    assert any("appears 2 times" in p and q.question_id in p for p in validate_bank(duplicated))
    extra = dict(bank.courses, **{"NEW-1": Course("NEW-1", "Empty course", "Physics", "English", "bachelor")})
    assert any("NEW-1" in p and "no questions" in p for p in validate_bank(Bank(extra, bank.questions, "doctored")))
    courses = dict(bank.courses)
    cid = q.course_id
    courses[cid] = replace(courses[cid], course_language="Klingon", course_year="phd")
    problems = validate_bank(Bank(courses, bank.questions, "doctored"))
    assert any("course_language" in p for p in problems) and any("course_year" in p for p in problems)


# ------------------------------------------------------------------------------------------------ loaders


def _official_pair(tmp_path, questions, courses=None):
    courses = courses if courses is not None else [
        {"course_id": 10, "course_name": "Physics course* #2", "course_program": "Physics",
         "course_language": "French", "course_year": "bachelor"},
        {"course_id": 15052, "course_name": "Online course #3", "course_program": None,
         "course_language": "English", "course_year": "online"}]
    qpath, cpath = tmp_path / "questions.json", tmp_path / "courses.json"
    qpath.write_text(json.dumps(questions), encoding="utf-8")
    cpath.write_text(json.dumps(courses), encoding="utf-8")
    return qpath, cpath


OFFICIAL_QUESTIONS = [
    {"question_id": 1, "course_id": 10, "question_type": "mcq", "question_body": "Which one?",
     "question_options": ["alpha", "beta", "gamma"], "question_sub_type": 1, "mcq_answer_index": 0,
     "question_answer": "alpha", "multiple_correct_answers": False},
    {"question_id": 2, "course_id": 10, "question_type": "mcq", "question_body": "Which ones?",
     "question_options": ["p", "q", "r", "s"], "question_sub_type": 2, "mcq_answer_index": [1, 3],
     "question_answer": ["q", "s"], "multiple_correct_answers": True, "question_difficulty": "Hard",
     "blooms_rating": "Apply"},
    {"question_id": 3, "course_id": 15052, "question_type": "open_answer", "question_body": "Explain.",
     "question_options": None, "question_sub_type": None, "mcq_answer_index": None,
     "question_answer": ["Because of energy conservation."], "multiple_correct_answers": None,
     "question_explanation": "Energy is conserved."},
    {"question_id": 4, "course_id": 15052, "question_type": "mcq", "question_body": "Pick all.",
     "question_options": ["u", "v", "w"], "question_sub_type": "multiple", "mcq_answer_index": [0, 2],
     "question_answer": None},
    {"question_id": 5, "course_id": 999, "question_type": "open_answer", "question_body": "Orphan.",
     "question_answer": "x"},
]


def test_load_official_reads_the_release_schema(tmp_path):
    qpath, cpath = _official_pair(tmp_path, OFFICIAL_QUESTIONS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # index 0 is used: no ambiguity warning
        official = load_official(qpath, cpath)
    assert [q.question_id for q in official] == ["1", "2", "3", "4"]   # the orphan is dropped, and said so
    assert any("dropped 1 question" in note and "999" in note for note in official.notes)
    q1, q2, q3, q4 = official.questions
    assert q1.mcq_answer_index == (0,) and not q1.multiple_correct_answers and q1.question_answer == "alpha"
    assert q2.mcq_answer_index == (1, 3) and q2.multiple_correct_answers and q2.question_answer == "q; s"
    assert q2.question_difficulty == "hard" and q2.blooms_rating == "apply"
    assert q3.question_type == "open_answer" and q3.question_options == () and q3.mcq_answer_index == ()
    assert q3.question_answer == "Because of energy conservation." and not q3.multiple_correct_answers
    assert q4.multiple_correct_answers and q4.question_answer == "u; w"   # flag missing: from question_sub_type
    assert official.courses["15052"].course_program == "none" and official.courses["10"].course_language == "French"
    assert validate_bank(official) == []
    assert load_official(tmp_path).questions == official.questions   # a folder holding both files works too


def test_load_official_warns_when_indices_look_one_based(tmp_path):
    questions = [dict(q) for q in OFFICIAL_QUESTIONS[:2]]
    questions[0]["mcq_answer_index"] = 2
    questions[1]["mcq_answer_index"] = [2, 4]
    qpath, cpath = _official_pair(tmp_path, questions)
    with pytest.warns(UserWarning, match="1-based"):
        ambiguous = load_official(qpath, cpath)
    assert any("index_base=1" in note for note in ambiguous.notes)
    assert any("out of range" in p for p in validate_bank(ambiguous))   # [2, 4] of 4 options read 0-based
    shifted = load_official(qpath, cpath, index_base=1)
    assert [q.mcq_answer_index for q in shifted] == [(1,), (1, 3)]


def test_missing_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="NLP4Education") as err:
        load_official(tmp_path / "questions.json", tmp_path / "courses.json")
    assert "CC BY-NC-ND" in str(err.value) and "questions.json" in str(err.value)
    qpath, _ = _official_pair(tmp_path, OFFICIAL_QUESTIONS)
    with pytest.raises(FileNotFoundError, match="courses"):
        load_official(qpath, tmp_path / "elsewhere" / "courses.json")
    with pytest.raises(FileNotFoundError, match="example_teacher.csv"):
        load_teacher_file(tmp_path / "mine.csv")
    with pytest.raises(FileNotFoundError, match="data/prompting"):
        load_bank(tmp_path / "empty")


def test_load_bank_is_strict_about_the_schema(tmp_path):
    courses = [{"course_id": "C-1", "course_name": "C", "course_program": "Physics", "course_language": "English",
                "course_year": "bachelor"}]
    record = {"question_id": "C-1-01", "course_id": "C-1", "question_type": "open_answer", "question_body": "Why?",
              "question_answer": "Because.", "question_answers": "typo"}
    (tmp_path / "courses.json").write_text(json.dumps(courses))
    (tmp_path / "questions.json").write_text(json.dumps([record]))
    with pytest.raises(ValueError, match=r"entry 0.*question_answers"):
        load_bank(tmp_path)
    del record["question_answers"]
    record["mcq_answer_index"] = ["a"]
    (tmp_path / "questions.json").write_text(json.dumps([record]))
    with pytest.raises(ValueError, match="mcq_answer_index"):
        load_bank(tmp_path)


def test_example_teacher_csv_loads_with_one_based_options():
    teacher = load_teacher_file(EXAMPLE_CSV)
    assert len(teacher) == 6 and validate_bank(teacher) == []
    assert {c.course_language for c in teacher.courses.values()} == {"English", "French"}
    kinds = Counter(q.kind for q in teacher)
    assert kinds["mcq_single"] >= 1 and kinds["mcq_multiple"] >= 1 and kinds["open_answer"] >= 1
    first = teacher.question("CS-108-01")   # correct_options "2" in the CSV = index 1
    assert first.mcq_answer_index == (1,) and first.question_answer == first.question_options[1] == "5"
    multi = teacher.question("CS-108-02")   # "1,3,5"
    assert multi.mcq_answer_index == (0, 2, 4) and multi.multiple_correct_answers
    assert teacher.question("MATH-101-02").numeric_tolerance == pytest.approx(0.01)   # written "1%"


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_teacher_file_round_trips(tmp_path, suffix):
    teacher = load_teacher_file(EXAMPLE_CSV)
    path = write_teacher_file(teacher, tmp_path / f"copy{suffix}")
    again = load_teacher_file(path)
    assert again.questions == teacher.questions and again.courses == teacher.courses
    with pytest.raises(FileExistsError):
        write_teacher_file(teacher, path)


def test_shipped_bank_round_trips_through_the_teacher_csv(bank, tmp_path):
    again = load_teacher_file(write_teacher_file(bank, tmp_path / "bank.csv"))
    assert again.questions == bank.questions and again.courses == bank.courses


def test_teacher_csv_errors_name_row_and_column(tmp_path):
    lines = EXAMPLE_CSV.read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    bad = [header,
           rows[0].replace("4 || 5 || 14 || 3,2,", "4 || 5 || 14 || 3,7,"),           # row 2: option 7 of 4
           rows[2].replace('"6 times (i = 2, 5, 8, 11, 14, 17)",6,0.001', ',6,'),   # row 3: no gold, no tolerance
           rows[4].replace("Analyse I,Mathematics", "Analyse I,")]                  # row 4: empty program
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(bad) + "\n", encoding="utf-8")
    with pytest.raises(ValueError) as err:
        load_teacher_file(path)
    message = str(err.value)
    assert "row 2, column 'correct_options'" in message and "numbered 1 to 4" in message
    assert "row 3, column 'question_answer'" in message and "row 3, column 'numeric_tolerance'" in message
    assert "row 4, column 'course_program'" in message
    path.write_text(header.replace("question_body", "body") + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"row 1 \(header\).*body"):
        load_teacher_file(path)


def test_teacher_csv_accepts_semicolons_and_a_byte_order_mark(tmp_path):
    text = ("\ufeffcourse_id;course_name;course_program;course_language;course_year;question_type;question_body;"
            "question_options;correct_options;question_answer;numeric_answer;numeric_tolerance\n"
            "M-1;Analyse I;Mathematics;fr;bachelor;open_answer;Combien vaut 2 + 2 ?;;;4;4;0,01\n"
            "M-1;Analyse I;Mathematics;fr;bachelor;mcq;Quel nombre est pair ?;3 || 4 || 5;2;;;\n")
    path = tmp_path / "excel.csv"
    path.write_text(text, encoding="utf-8")
    teacher = load_teacher_file(path)
    assert teacher.courses["M-1"].course_language == "French"
    assert teacher.questions[0].numeric_tolerance == pytest.approx(0.01)
    assert teacher.questions[1].mcq_answer_index == (1,) and teacher.questions[1].question_id == "M-1-r3"


def test_teacher_json_in_our_schema(tmp_path, bank):
    sub = bank.select(course_ids="MATH-106")
    data = {"courses": [vars(c) for c in sub.courses.values()], "questions": [q.to_dict() for q in sub]}
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    assert load_teacher_file(path).questions == sub.questions
    data["questions"][0]["mcq_answer_index"] = [9]
    data["questions"][0]["question_type"] = "mcq"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(ValueError, match="out of range"):
        load_teacher_file(path)


def test_teacher_csv_with_a_separate_courses_file(tmp_path, bank):
    courses = tmp_path / "courses.json"
    courses.write_text(json.dumps([vars(bank.courses["ME-251"]), vars(bank.courses["EE-204"])]), encoding="utf-8")
    path = tmp_path / "short.csv"
    path.write_text("course_id,question_type,question_body,question_answer\n"
                    "ME-251,open_answer,Why do heat engines need a cold reservoir?,By the second law.\n",
                    encoding="utf-8")
    teacher = load_teacher_file(path, courses)
    assert list(teacher.courses) == ["ME-251"]
    assert teacher.course_of(teacher.questions[0]).course_name == "Thermodynamics"
    with pytest.raises(ValueError, match="missing column"):
        load_teacher_file(path)   # without the courses file, the course columns are required
