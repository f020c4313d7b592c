"""Could an AI assistant pass the degree? Question bank, prompting strategies, backends, grading and the study
(Borges et al., "Could ChatGPT get an engineering degree?", PNAS 121(49) e2414955121, 2024; arXiv 2408.11841).

Core modules (the notebooks' modules ``nb01_strategies``, ``nb02_study`` and ``nb03_your_course`` build on them):

* :mod:`.bank`: the question bank (schema of the authors' release), its loaders and the teacher file format;
* :mod:`.strategies`: the eight prompting strategies as plans of model calls;
* :mod:`.backends`: the local Hugging Face model, an OpenAI-compatible endpoint, the scripted stand-in, the response
  cache;
* :mod:`.grading`: MCQ answer extraction (never guessing), the four-level LLM grader, the numeric checker, kappa;
* :mod:`.study`: :func:`run_study` (every question x strategy, batched and cached) and the aggregation (mean,
  majority vote, any strategy, course scores, pass rates);
* :mod:`.assistant`: the notebooks' backend knobs, :func:`make_backend`, reply caps, the response-cache folder;
* :mod:`.synthetic`: the scripted stand-in at several accuracies on a whole bank (the synthetic comparison);
* :mod:`.views`: the replies as a table, and figures that say so when they have nothing to show.
"""
from __future__ import annotations

from lionsnb.prompting.assistant import assistant_knobs, decoding_settings, make_backend, mark_truncated, response_dir
from lionsnb.prompting.backends import (
    DETERMINISTIC,
    PAPER_DECODING,
    LocalHFBackend,
    OpenAICompatibleBackend,
    ResponseCache,
    ScriptedBackend,
    split_by_padding,
)
from lionsnb.prompting.bank import (
    Bank,
    Course,
    Question,
    load_bank,
    load_official,
    load_teacher_file,
    validate_bank,
    write_teacher_file,
)
from lionsnb.prompting.grading import (
    DEFAULT_POINTS,
    GRADE_LABELS,
    check_numeric,
    cohen_kappa,
    extract_grade_label,
    extract_mcq,
    grade_mcq,
    grader_messages,
    parse_numbers,
)
from lionsnb.prompting.strategies import (
    CALLS,
    LABEL_STYLE,
    REASONING,
    STRATEGIES,
    build_messages,
    demonstrations,
    majority_vote,
    reply_token_caps,
    run_plan,
    strategy_plan,
)
from lionsnb.prompting.study import (
    accuracy_by_strategy,
    breakdown,
    course_scores,
    pass_rates,
    program_pass_rates,
    question_scores,
    run_study,
    strategy_summary,
    summary,
    truncated_rate,
    unparseable_rate,
)
from lionsnb.prompting.synthetic import scripted_rows, scripted_study
from lionsnb.prompting.views import figure_or_replies, nothing_to_show, replies_table

__all__ = [
    # the bank
    "Bank", "Course", "Question", "load_bank", "load_official", "load_teacher_file", "write_teacher_file",
    "validate_bank",
    # the strategies
    "STRATEGIES", "LABEL_STYLE", "CALLS", "REASONING", "strategy_plan", "build_messages", "run_plan",
    "demonstrations", "majority_vote", "reply_token_caps",
    # backends and the response cache
    "LocalHFBackend", "OpenAICompatibleBackend", "ScriptedBackend", "ResponseCache", "DETERMINISTIC",
    "PAPER_DECODING", "split_by_padding",
    # grading
    "extract_mcq", "grade_mcq", "grader_messages", "extract_grade_label", "GRADE_LABELS", "DEFAULT_POINTS",
    "check_numeric", "parse_numbers", "cohen_kappa",
    # the study and its aggregates
    "run_study", "summary", "accuracy_by_strategy", "unparseable_rate", "truncated_rate", "strategy_summary",
    "question_scores", "breakdown", "course_scores", "pass_rates", "program_pass_rates",
    # the notebooks' assistant, the synthetic comparison, views
    "assistant_knobs", "make_backend", "decoding_settings", "response_dir", "mark_truncated", "scripted_rows",
    "scripted_study", "replies_table", "nothing_to_show", "figure_or_replies",
]
