"""Grading the assistant's answers: MCQ extraction, the four-level LLM grader, a numeric checker, Cohen's kappa.

* :func:`extract_mcq` reads the option(s) an answer selects. It follows the label style of the strategy that asked
  (``"number"``: ``2. text``, ``"letter"``: ``B: text``, ``"bracket"``: ``[B]: text``; see
  :data:`lionsnb.prompting.strategies.LABEL_STYLE`) and **never guesses**: when an answer is ambiguous (two options
  for a single-answer question, "A or C", a label outside the options, nothing recognisable) it returns ``None``, so
  that the unparseable rate can be reported on its own instead of being hidden in the accuracy.
* :func:`grader_messages` / :func:`extract_grade_label` implement the open-answer grader on the paper's four levels
  (correct, almost correct, mostly incorrect, wrong answer). The release does not say how the labels become points;
  :data:`DEFAULT_POINTS` (1 / 0.75 / 0.25 / 0) is **our** choice and every function takes a ``points`` mapping.
* :func:`check_numeric` is a deterministic checker for numeric gold answers; :func:`cohen_kappa` measures how much
  two graders agree beyond chance.

The official extraction code is not released: the rules below are ours and are documented where they are applied.
"""
from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from lionsnb.prompting.bank import Course, Question

Messages = list[dict[str, str]]

__all__ = [
    "GRADE_LABELS", "DEFAULT_POINTS", "LETTERS", "extract_mcq", "grade_mcq", "grader_messages",
    "grader_retry_messages", "extract_grade_label", "label_points", "parse_numbers", "check_numeric",
    "cohen_kappa",
]

#: option letters of the "letter" and "bracket" styles (at most 26 options)
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# ============================================================================= MCQ extraction
#
# Order of the rules (the first one that yields an answer wins; each returns None rather than guess):
#   1. an answer phrase ("final answer is", "the answers are", "answer:", "la réponse finale est", "réponses :", ...)
#      followed by labels. The LAST phrase that is followed by labels is used, so an answer that reconsiders itself
#      is read at its conclusion. Bracketed labels on the rest of that line count even after other words
#      ("Final answer: after checking, [B]"); the option text alone after the phrase also counts.
#   2. the reply opens with labels ("B", "(B)", "**B**", "2. Paris", "1. Paris\n3. Rome", "1 and 3").
#      With the option texts known, a line "k. text" only counts when its text agrees with option k, so a numbered
#      list of reasoning steps is not read as a choice (and "3. <text of option 4>" is ambiguous).
#   3. the whole reply is the text of one option (or, for MCQ-n, of several, one per line / separated by ";").
#   4. the reply ends by stating the text of one option after a copula: "The maximum efficiency ... is 67%."
#      ("is", "are", "equals", "=", "est", "vaut", ...; the LAST copula whose rest of the reply is an option's text).
#   5. bracket style only: the last bracketed label group of the reply ("... so [C]").
# Texts are compared after NFKC normalisation, with non-breaking and other Unicode spaces read as spaces, case and
# markdown ignored, and the space between a number and its unit or percent sign optional: "1. 25%" agrees with the
# option "25 %", "300K" with "300 K".
# A label and its text: after "B:", "B)", "B.", "(B)" or "[B]" the rest of the line is that option's text, even
# when it starts with a capital that is also a label ("B: A FIFO queue", "(B) I/O-bound", "[C]: A heap"). Several
# labels on one line need a list separator ("A, C", "A and C", "[A] et [C]", also after a label's own option text:
# "(B) A FIFO queue and (C) A heap") or the same bracket form side by side ("[A] [C]", "(A) (C)"). With the option
# texts known, a bare capital that starts an option's text is that option ("Answer: A FIFO queue", "Answer:
# B-tree"); when that text is the letter alone and the label would name another option, the reply is ambiguous.
# After a rule yields labels: duplicates are merged; a label outside the options -> None; several labels for a
# single-answer question -> None; "A or C" -> None.

_PHRASE_RE = re.compile(
    r"""(?ix)
    (?:
        \bfinal\s+answers?\b (?:\s+(?:is|are|would\s+be|will\s+be))? |
        \b(?:the\s+)?(?:correct|right|best)\s+(?:answers?|options?|choices?)\s*(?:is|are|would\s+be|:) |
        \b(?:the\s+)?answers?\s+(?:is|are|would\s+be|will\s+be) |
        \banswers?\s*: |
        \b(?:I|we)\s+(?:choose|select|pick|would\s+choose|would\s+select|would\s+pick)\b |
        \br[ée]ponses?\s+finales?\b (?:\s+(?:est|sont|serait|seraient))? |
        \b(?:la|les)\s+(?:bonnes?|r[ée]ponses?)\s+(?:r[ée]ponses?\s+)?(?:correctes?\s+|justes?\s+)?(?:est|sont) |
        \b(?:la|les)\s+r[ée]ponses?\s+(?:correctes?|justes?|exactes?)\s+(?:est|sont) |
        \br[ée]ponses?\s*: |
        \bje\s+(?:choisis|choisirais|s[ée]lectionne)\b
    )""")

#: words that may sit between an answer phrase and the labels ("the answer is option B", "answer: the letter C").
#: Articles are matched in lower case only, so that the label "A" is never skipped as the article "a".
#: All the patterns below are used as ``pattern.match(s, pos)`` (anchored at ``pos``, no slicing) and are written
#: without nested unbounded repetitions, so that extraction stays linear on long or adversarial replies.
_FILLER_WORDS = re.compile(
    r"""(?ix)(?:[:=\-–—>]|
        \b(?:therefore|thus|so|hence|then|clearly|definitely|the|options?|choices?|letters?|numbers?|n[°o]\.?|
             answers?|is|are|would\s+be|be|donc|alors|ainsi|c'est|l'|la|le|les|lettres?|num[ée]ros?|r[ée]ponses?|
             est|sont)\b|(?-i:\ba\b|\ban\b))""")
_SPACES = re.compile(r"[ \t]+")
_COLON_SPACES = re.compile(r"[ \t]*:?[ \t]*")
_WHITESPACE = re.compile(r"\s+")
_SEP_RE = re.compile(r"(?i)[ \t]*(?:(?:,|;|&|\+|/|\band\b|\bet\b)[ \t]*)*")
_OR_RE = re.compile(r"(?i)[ \t]*(?:,[ \t]*)?(?:\bor\b|\bou\b)[ \t]*")
_GROUP_RE = re.compile(r"(?<![\w\]])\[([^\[\]\n]{1,60})\]")
_MAX_FILLER = 8        # filler words skipped before a label, at most
_MAX_PHRASES = 40      # answer phrases tried, from the last one backwards
_MAX_LABELS = 60       # labels read in one run


def _label_value(tok: str, style: str) -> int | None:
    """0-based index of a label token ("B", "b", "2"), or None when it is not a label of this style."""
    tok = tok.strip()
    if style == "number":
        return int(tok) - 1 if tok.isdigit() and len(tok) <= 3 and int(tok) >= 1 else None
    if len(tok) == 1 and tok.upper() in LETTERS:
        return LETTERS.index(tok.upper())
    return None


def _group_values(content: str, style: str) -> list[int] | None:
    """Labels of a bracket group's content: "A", "A, C", "1 et 3", "A: Paris"; None when it is anything else."""
    parts = [p.strip() for p in re.split(r"(?i)\s*(?:,|;|&|/|\band\b|\bet\b)\s*", content.strip()) if p.strip()]
    if len(parts) == 1:
        parts = [re.sub(r"\s*[:.)]\s.*\Z|\s*:.*\Z", "", parts[0])]  # "[A: Paris]" -> "A"
    elif style != "number" and not all(p.isupper() for p in parts):
        return None  # "[x, p]" is a commutator, not two options; lists of labels are written in capitals
    vals = [_label_value(p, style) for p in parts]
    return None if not vals or any(v is None for v in vals) else vals


def _skip_filler(s: str, pos: int, newlines: bool) -> int:
    space = _WHITESPACE if newlines else _SPACES
    words = 0
    while words <= _MAX_FILLER:
        m = space.match(s, pos)
        if m:
            pos = m.end()
        m = _FILLER_WORDS.match(s, pos)
        if not m or not m.group(0):
            return pos
        pos, words = m.end(), words + 1
    return pos


_END = r"(?=[ \t]*(?:$|[,;&+/.!?\]\n]|\band\b|\bet\b|\bor\b|\bou\b))"
_PATTERNS: dict[tuple[str, bool], list[tuple[re.Pattern, bool]]] = {}


def _patterns(style: str, phrase: bool) -> list[tuple[re.Pattern, bool]]:
    """(pattern, delimited) for one label token at a position, in the order they are tried."""
    key = (style, phrase)
    if key not in _PATTERNS:
        tok, low = (r"(\d{1,3})", r"(\d{1,3})") if style == "number" else (r"([A-Z])", r"([A-Za-z])")
        if style == "number":
            bare = tok + r"\b(?![.,]\d)" + _END
        elif phrase:  # "the answer is B because ..." -- but "answer: I think ..." is the pronoun
            bare = tok + r"\b(?![\'’]\w)(?<!I(?=[ \t]+[a-z]))"
        else:
            bare = tok + r"\b" + _END
        _PATTERNS[key] = [(re.compile(r"\(\s*" + low + r"\s*\)"), False), (re.compile(low + r"[ \t]*\)"), True),
                          (re.compile(tok + r"[ \t]*(?::|\.(?!\d))"), True), (re.compile(bare, re.M), False)]
    return _PATTERNS[key]


def _option_text_at(s: str, pos: int, options: Sequence[str] | None) -> tuple[int, int] | None:
    """(index, end) of the longest option text written at ``s[pos]`` (case and spacing ignored, ending at a word
    boundary), or None. Used where a bare capital could be read as a label: "A FIFO queue" is the text of an option,
    not the label A followed by "FIFO queue"."""
    if not options:
        return None
    best = None
    for j, opt in enumerate(options):
        end = _option_end(s, pos, opt)
        if end is not None and (best is None or end > best[1]):
            best = (j, end)
    return best


@functools.lru_cache(maxsize=4096)
def _option_pattern(option: str) -> re.Pattern | None:
    """A case-insensitive pattern for an option's text written anywhere: spaces between words stretch, and the space
    between a number and its unit or percent sign is optional ("25 %" matches "25%", "300K" matches "300 K")."""
    text = _UNIT_GAP.sub("", _clean(option))
    if not text.strip():
        return None
    parts = []
    for i, ch in enumerate(text):
        if ch.isspace():
            if parts and parts[-1] != r"[ \t]+":
                parts.append(r"[ \t]+")
            continue
        if i and text[i - 1].isdigit() and _UNIT_START.match(ch):
            parts.append(r"[ \t]*")
        parts.append(re.escape(ch))
    return re.compile(r"(?i)" + "".join(parts) + r"(?!\w)")


def _option_end(s: str, pos: int, option: str) -> int | None:
    """Where the option's text ends when it is written at ``s[pos]`` (case and spacing ignored), else None."""
    pattern = _option_pattern(option)
    m = pattern.match(s, pos) if pattern is not None else None
    return m.end() if m else None


def _labels_at(s: str, pos: int, style: str, phrase: bool,
               options: Sequence[str] | None = None) -> tuple[list[int], int, bool] | None:
    """The label token(s) starting exactly at ``s[pos]``: (0-based values, end, delimited) or None.

    Forms: "[B]" / "[A, C]" / "(B)" / "B)" / "B:" / "B." (delimited) and a bare "B" or "2". A bare token must be
    followed by a separator, punctuation or the end ("A wave", "3 m/s" are not labels), except that after an
    answer phrase a bare capital letter counts ("the answer is B because ..."). Lower-case letters only count in
    the bracketed forms and before ")", since "a" is a word. With the option texts known, a bare capital that
    starts an option's text ("Answer: A FIFO queue", "Answer: I/O-bound") is read as that option (delimited, the
    text consumed); when that text is the letter alone and names another option than the label would, the reply is
    ambiguous (options "B", "A", ...: is "A" the label or the text?).
    """
    if pos >= len(s):
        return None
    m = _GROUP_RE.match(s, pos)
    if m:
        vals = _group_values(m.group(1), style)
        return (vals, m.end(), False) if vals else None
    if pos and s[pos - 1].isalnum():
        return None
    pats = _patterns(style, phrase)
    for k, (pat, delimited) in enumerate(pats):
        m = pat.match(s, pos)
        if m:
            v = _label_value(m.group(1), style)
            if v is None:
                return None
            if k == len(pats) - 1 and style != "number":  # a bare capital: is it the start of an option's text?
                hit = _option_text_at(s, pos, options)
                if hit is not None:
                    j, end = hit
                    if end - pos == m.end(1) - pos and j != v:
                        raise _Ambiguous
                    return [j], end, True
            return [v], m.end(), delimited
    return None


#: a space between a number and its unit or percent sign ("25 %", "300 K", "9.81 m/s"): optional when comparing texts
_UNIT_GAP = re.compile(r"(?<=\d)[^\S\n]+(?=[%‰°µΩ]|[^\W\d_])")
_UNIT_START = re.compile(r"[%‰°µΩ]|[^\W\d_]")


def _norm_text(s: str) -> str:
    """A text as compared with an option's: NFKC, lower case, no markdown, spaces collapsed, no space between a number
    and its unit or percent sign, outer punctuation stripped."""
    s = unicodedata.normalize("NFKC", s).lower()
    s = re.sub(r"[*_`$\\]", "", s)
    s = re.sub(r"\s+", " ", s)
    s = _UNIT_GAP.sub("", s)
    return s.strip(" \t\n.;:,!?\"'«»()[]")


def _text_agrees(text: str, option: str) -> bool:
    """Whether the text written after a label is (the start of) that option's text."""
    a, b = _norm_text(text), _norm_text(option)
    if not a or not b:
        return True
    return a == b or a.startswith(b) or b.startswith(a)


class _Ambiguous(Exception):
    pass


def _parse_run(s: str, start: int, style: str, options: Sequence[str] | None, *, phrase: bool,
               multiline: bool) -> list[int]:
    """The run of labels at ``s[start]`` (after filler words); [] when no label starts there.

    Labels may be separated by ",", "and", "et", ";" ... on one line, or (``multiline``) stand at the start of
    successive lines ("1. Paris\n3. Rome"). Text after a label must agree with that option's text for the run to
    go on; otherwise reading stops there. Outside an answer phrase (``phrase=False``) a delimited label whose text
    disagrees with the option ("2. First, we compute ...") is not read at all: it is a reasoning step.
    Raises _Ambiguous for "A or C".
    """
    labels: list[int] = []
    pos = _skip_filler(s, start, newlines=True)
    lenient = phrase  # only the labels right after an answer phrase; continuation lines are read strictly
    while len(labels) < _MAX_LABELS:
        hit = _labels_at(s, pos, style, lenient, options)
        if hit is None:
            break
        vals, end, delimited = hit
        om = _OR_RE.match(s, end)
        if om and _labels_at(s, _skip_filler(s, om.end(), False), style, lenient, options):
            raise _Ambiguous
        sm = _SEP_RE.match(s, end)
        nxt = _skip_filler(s, sm.end(), False)
        # after "2." / "B:" / "B)" the rest of the line is the option's text ("2. 3" is option 2, whose text is 3).
        # Another label follows only after a list separator ("A, C", "A and C", "[A] et [C]") or, with nothing but
        # spaces between, when both are bracketed the same way ("[A] [C]", "(A) (C)"): in "(B) A FIFO queue" or
        # "[B] I/O-bound" the capital after the label starts the option's text, it is not a second label.
        if s[end:sm.end()].strip():
            listed = True
        else:
            listed = s[pos] in "[(" and nxt == sm.end() and nxt < len(s) and s[nxt] == s[pos]
        if not delimited and listed and _labels_at(s, nxt, style, lenient, options):
            labels += vals
            pos = nxt
            continue
        if options is not None and len(vals) == 1 and vals[0] < len(options):
            # "(B) A FIFO queue and (C) A heap": after the label's own option text, a list separator and a label
            after = _option_end(s, _COLON_SPACES.match(s, end).end(), options[vals[0]])
            if after is not None:
                om = _OR_RE.match(s, after)
                if om and _labels_at(s, _skip_filler(s, om.end(), False), style, lenient, options):
                    raise _Ambiguous
                sm = _SEP_RE.match(s, after)
                nxt = _skip_filler(s, sm.end(), False)
                if s[after:sm.end()].strip() and _labels_at(s, nxt, style, lenient, options):
                    labels += vals
                    pos = nxt
                    continue
        eol = s.find("\n", end)
        eol = len(s) if eol < 0 else eol
        text = s[end:min(eol, end + 2000)].strip(" \t:-–—")
        if text and not re.fullmatch(r"[.!?,;)\]]*", text):
            if options is not None and len(vals) == 1 and vals[0] < len(options):
                agrees = _text_agrees(text, options[vals[0]])
                if not agrees and any(j != vals[0] and _norm_text(o) and _text_agrees(text, o)
                                      for j, o in enumerate(options)):
                    raise _Ambiguous  # "3. <the text of option 4>": the label and the text disagree
            else:
                agrees = options is None
            if not agrees and delimited and not lenient:
                break
            labels += vals
            if not agrees:
                break
        else:
            labels += vals
        if not multiline or eol >= len(s):
            break
        pos = eol + 1
        sp = (_WHITESPACE if phrase else _SPACES).match(s, pos)
        if sp:
            pos = sp.end()
        lenient = False
    return labels


def _bracket_groups(s: str, style: str) -> list[list[int]]:
    """Every bracketed label group of ``s`` in order: "[A]", "[A, C]", "[1 et 3]"; others ("[x^2]", "a[i]") skipped."""
    out = []
    for m in _GROUP_RE.finditer(s):
        vals = _group_values(m.group(1), style)
        if vals:
            out.append(vals)
    return out


def _match_option_texts(s: str, options: Sequence[str] | None, multiple: bool) -> list[int] | None:
    """Indices of the options whose texts make up ``s`` exactly (one option, or several separated by lines/';')."""
    if not options:
        return None
    normed = [_norm_text(o) for o in options]
    if len(set(normed)) < len(normed):
        return None  # two identical option texts: the text cannot tell them apart
    whole = _norm_text(s)
    if whole in normed:
        return [normed.index(whole)]
    if multiple:
        parts = [_norm_text(p) for p in re.split(r"(?i)\n|;|\s+and\s+|\s+et\s+", s) if _norm_text(p)]
        if len(parts) > 1 and all(p in normed for p in parts):
            return [normed.index(p) for p in parts]
    return None


def _finish(labels: list[int], n_options: int, multiple: bool) -> tuple[int, ...] | None:
    chosen = sorted(set(labels))
    if not chosen or chosen[-1] >= n_options or chosen[0] < 0:
        return None
    if not multiple and len(chosen) > 1:
        return None
    return tuple(chosen)


#: non-breaking, thin and other Unicode spaces, read as plain spaces
_ODD_SPACES = re.compile(r"[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")


def _clean(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = _ODD_SPACES.sub(" ", text.replace("\u2019", "'"))
    return re.sub(r"\*\*|__|`", "", text).replace("\r\n", "\n").strip()


#: a copula that states a conclusion: "... is 67%.", "... are A and C", "... est 50 %", "... = 0.5"
_STATEMENT_RE = re.compile(r"(?i)\b(?:is|are|equals|would\s+be|will\s+be|est|sont|vaut|valent|serait)\b|=|≈")
_MAX_STATEMENTS = 20


def _statement_options(s: str, options: Sequence[str] | None, multiple: bool) -> list[int] | None:
    """Rule 4: the reply ENDS by stating an option's text after a copula ("The maximum efficiency ... is 67%.").

    The copulas are tried from the last one backwards; the rest of the reply after one (trailing punctuation aside)
    must be exactly the text of one option (several, one per line or joined by "and"/";", for MCQ-n). A statement
    followed by anything else (more option lines, more reasoning) does not count.
    """
    if not options:
        return None
    for m in reversed(list(_STATEMENT_RE.finditer(s))[-_MAX_STATEMENTS:]):
        tail = s[m.end():].strip(" \t\n:")
        found = _match_option_texts(tail, options, multiple) if tail else None
        if found:
            return found
    return None


def extract_mcq(text: str | None, n_options: int, style: str, multiple: bool, *,
                options: Sequence[str] | None = None) -> tuple[int, ...] | None:
    """0-based indices of the selected option(s), or None; see :func:`_extract_mcq`.

    One more rule on top: in the number style, when an option's TEXT is itself a number that is another option's
    label (options "0", "1", "2", "3"), a bare "3" could mean label 3 or the option reading "3": it counts only in
    the explicit "k. text" form, otherwise the answer is ambiguous (None) rather than guessed.
    """
    selected = _extract_mcq(text, n_options, style, multiple, options=options)
    if selected is None or style != "number" or not options or len(options) != n_options:
        return selected
    clean = _clean(text)
    for i in selected:
        label = str(i + 1)
        clash = any(j != i and str(o).strip() == label for j, o in enumerate(options))
        explicit = re.search(rf"(?<![\d.]){label}\s*[.)]\s*{re.escape(str(options[i]).strip())}(?![\d.])", clean)
        if clash and not explicit:
            return None
    return selected


def _extract_mcq(text: str | None, n_options: int, style: str, multiple: bool, *,
                 options: Sequence[str] | None = None) -> tuple[int, ...] | None:
    """0-based indices of the option(s) that ``text`` selects, or None when it cannot be read without guessing.

    ``style`` is the labelling the prompt used ("number", "letter" or "bracket"): numbers are read as labels only
    in the number style, letters only in the letter and bracket styles. ``multiple`` (MCQ-n) allows several
    labels; for a single-answer question several distinct labels make the answer ambiguous (None).
    ``options`` (the option texts, optional) lets an answer that only repeats an option's text be read, and lets
    "k. text" lines be checked against option k. See the module comment for the order of the rules.
    """
    if style not in ("number", "letter", "bracket"):
        raise ValueError(f"unknown label style {style!r}: expected 'number', 'letter' or 'bracket'")
    if not text or n_options <= 0:
        return None
    s = _clean(text)
    opts = list(options) if options is not None else None
    if opts is not None and len(opts) != n_options:
        opts = None
    try:
        # rule 1: the last answer phrase that is followed by something readable
        for m in reversed(list(_PHRASE_RE.finditer(s))[-_MAX_PHRASES:]):
            nl = s.find("\n", m.end())
            multiline = multiple or bool(re.compile(r"[ \t]*:?[ \t]*\n").match(s, m.end()))
            labels = _parse_run(s, m.end(), style, opts, phrase=True, multiline=multiline)
            if not labels:
                line = s[m.end():nl if nl >= 0 else len(s)].lstrip(" \t:")[:2000]
                groups = _bracket_groups(line, style)
                if groups:
                    labels = [v for g in groups for v in g]
                else:
                    labels = (_match_option_texts(line, opts, multiple)
                              or _match_option_texts(line[_skip_filler(line, 0, False):], opts, multiple) or [])
            if labels:
                return _finish(labels, n_options, multiple)
        # rule 2: the reply opens with labels
        labels = _parse_run(s, 0, style, opts, phrase=False, multiline=True)
        if labels:
            return _finish(labels, n_options, multiple)
        # rule 3: the reply is the text of the option(s)
        by_text = _match_option_texts(s, opts, multiple)
        if by_text:
            return _finish(by_text, n_options, multiple)
        # rule 4: the reply ends by stating the text of the option(s) ("... is 67%.")
        stated = _statement_options(s, opts, multiple)
        if stated:
            return _finish(stated, n_options, multiple)
        # rule 5: the bracket style's last bracketed group
        if style == "bracket":
            groups = _bracket_groups(s, style)
            if groups:
                return _finish(groups[-1], n_options, multiple)
    except _Ambiguous:
        return None
    return None


def grade_mcq(selected: Sequence[int] | None, gold: Sequence[int], partial: bool = False) -> float:
    """1.0 for the exact set of correct options, else 0.0; ``partial=True`` gives the Jaccard overlap instead.

    An unparseable answer (``None``) scores 0. Whether the paper gives partial credit on MCQ-n is not known, hence
    the parameter.
    """
    if selected is None:
        return 0.0
    a, b = set(selected), set(gold)
    if not partial:
        return float(a == b)
    union = a | b
    return len(a & b) / len(union) if union else 1.0


# ============================================================================= open answers: the LLM grader

GRADE_LABELS = ("correct", "almost_correct", "mostly_incorrect", "wrong")
#: label -> points. OURS: the public release does not contain the mapping the paper used.
DEFAULT_POINTS = {"correct": 1.0, "almost_correct": 0.75, "mostly_incorrect": 0.25, "wrong": 0.0}

#: normalised spellings (lower case, no spaces/underscores/hyphens) -> label; longest first when searching text
_LABEL_SPELLINGS = {
    "almostcorrect": "almost_correct", "mostlycorrect": "almost_correct", "partiallycorrect": "almost_correct",
    "mostlyincorrect": "mostly_incorrect", "mostlywrong": "mostly_incorrect",
    "wronganswer": "wrong", "wrong": "wrong", "incorrect": "wrong",
    "correct": "correct",
}
_SPELLING_RE = re.compile("|".join(sorted(_LABEL_SPELLINGS, key=len, reverse=True)))


def grader_messages(question: Question, course: Course | None, answer_text: str) -> Messages:
    """The grader's messages for one open answer (paper structure, our wording; always in English).

    System: the teacher of the course grading exam answers (a generic exam-grading teacher when the course name is
    missing). User: strict grading with reasoning, the four levels, then labelled question, reference answer and
    student answer fields, and a request for a JSON object with accuracy, completeness and grade. The grader is
    asked in English whatever the course language so that its labels are the four English keywords.
    """
    name = getattr(course, "course_name", "") or ""
    system = (f"You teach the course {name} and you are grading exam answers." if name.strip()
              else "You are a teacher grading exam answers.")
    user = (
        "Grade the student's answer to the exam question below, strictly and precisely. First explain your "
        "reasoning: check the student's answer against the reference answer for accuracy and for completeness. "
        "Then choose exactly one grade among these four: correct, almost correct, mostly incorrect, wrong answer.\n"
        f"Question: {question.question_body}\n"
        f"Reference answer: {question.question_answer}\n"
        f"Student answer: {answer_text}\n"
        'Finish with a JSON object of the form {"accuracy": "...", "completeness": "...", "grade": "..."}, '
        "where grade is one of the four grades above."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def grader_retry_messages(messages: Messages, reply: str) -> Messages:
    """The single retry when no label could be read: the conversation so far plus a request for the bare label."""
    return list(messages) + [
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "Reply with the grade only, one of: correct, almost correct, mostly incorrect, "
                                    "wrong answer."},
    ]


def _spelling_label(s: str) -> str | None:
    key = re.sub(r"[\s_\-]+", "", s.lower())
    return _LABEL_SPELLINGS.get(key)


def extract_grade_label(text: str | None) -> str | None:
    """The grader's label (one of :data:`GRADE_LABELS`) or None.

    Lower case and spaces/underscores/hyphens removed, so "Almost Correct", "almost_correct" and "ALMOSTCORRECT"
    agree; "mostly correct" counts as almost correct (as in the release); "wrong answer"/"wrong"/"incorrect" as
    wrong. Order: the JSON "grade" field; else the first label after the last word "grade"; else the only label
    mentioned. Several different labels and no "grade" field -> None.
    """
    if not text:
        return None
    fields = list(re.finditer(r"""["']?grade["']?\s*:\s*["']([^"'\n]{1,40})["']""", text, flags=re.I))
    if fields:
        m = fields[-1]
        label = _spelling_label(m.group(1))
        if label is not None:
            return label
    flat = re.sub(r"[\s_\-*\"']+", "", text.lower())
    k = flat.rfind("grade")
    if k >= 0:
        found = _SPELLING_RE.search(flat, k + len("grade"))
        if found and found.start() - (k + len("grade")) <= 3:  # "grade: correct", "grade=almost correct"
            return _LABEL_SPELLINGS[found.group(0)]
    labels = {_LABEL_SPELLINGS[x.group(0)] for x in _SPELLING_RE.finditer(flat)}
    return labels.pop() if len(labels) == 1 else None


def label_points(label: str | None, points: dict[str, float] | None = None) -> float | None:
    """Points of a grade label under ``points`` (default :data:`DEFAULT_POINTS`); None for no label."""
    if label is None:
        return None
    return float((points or DEFAULT_POINTS)[label])


# ============================================================================= numeric checker
#
# Reading numbers (parse_numbers):
#   * the text is NFKC-normalised EXCEPT Unicode superscripts and subscripts, which are not digits: in "E₁",
#     "w₁", "C₅", "H₂O" the index is not a number, and "m²" is a unit. A superscript exponent written right after a
#     number is a power: "10⁻³" = 0.001, "1.5 × 10⁻³" = 0.0015, "2³" = 8;
#   * scientific notation is "e"/"E", an optional sign and ASCII digits written directly after the mantissa, with no
#     space ("1.5e-3", "6.02E23"; "2.5 E₁" and "2.5 E1" are 2.5 followed by something else), or a power of ten
#     ("1.5 × 10^-3", "2.0\times10^{4}", "3·10⁸"); "10^3" / "10**3" after a bare number are powers;
#   * a fraction of two plain numbers is one number: "1/6" = 0.1667, "27 / 5" = 5.4 (not a date "12/05/2024");
#     a number right after "/" ("L/2", "m/s^2") or "^" is a denominator or exponent of something else, not a number;
#   * thousands separators, the French decimal comma and signs as documented in parse_numbers.
#
# Choosing THE number of an answer (check_numeric), in this order:
#   1. the answer segment: the text after the LAST strong answer phrase that is followed by a number. Phrases come in
#      two tiers and a tier is used only when the one above has no phrase followed by a number: (a) "final answer(s)
#      (is/are)", "réponse(s) finale(s) (est/sont)" -- what the prompts ask the model to write; (b) "answer(s)",
#      "réponse(s)", "result(s)", "résultat(s)". Without such a phrase, the segment is the whole text.
#      "=" / "≈" / "~" are NOT answer phrases at this level: in "Final answer: 42 N, reached at x = 5" the "=" of
#      the trailing clause belongs to that clause, not to the answer.
#   2. the opening statement: if the segment opens with a number (after ":", "=", "≈", spaces, markdown, and hedges
#      such as "about", "approximately", "environ"), the first clause of the segment (up to ",", ";", a sentence end
#      or a line break outside parentheses) states the answer: the value after the clause's last "="/"≈" when it is
#      an equation chain ("2 + 3 = 5", "27/5 = 5,4"), else the opening number itself, provided the rest of the
#      clause is a unit or a short noun (at most three words, no other number): "25, atteinte en x = y = 5" -> 25,
#      "42 trees (...)" -> 42. An opening "1." / "1)" followed by a line "2." / "2)" is a list marker, not a value.
#      For the whole text (no answer phrase) this rule applies only to a single-line text, so that a multi-line
#      reasoning that happens to start with a number is read by its conclusion.
#   3. else the value after the LAST "=" / "≈" / "~" of the segment that is followed by a number ("ΔS = R ln 2 ≈
#      5.76 J/K" -> 5.76, "x = 2 + 3 = 5" -> 5);
#   4. else the first number of an answer segment, or the LAST number of a whole text ("We first get 10, then 20").
# Parentheses hold asides and restatements ("About 25465 Pa (25.5 kPa)", "About 0.167 (1/6)", "F1 = 0.727
# (precision 0.8, recall 0.667)"): answer phrases and "="/"≈" inside parentheses are ignored, and a number inside
# parentheses is used by a rule only when that rule has no candidate outside parentheses ("π (≈ 3,1416)" -> 3.1416).

_SUPSUB = "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻₀₁₂₃₄₅₆₇₈₉₊₋"
_SUPSUB_RE = re.compile(f"([{_SUPSUB}]+)")
_SUP_DIGITS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻", "0123456789+-")

_NUM_RE = re.compile(
    r"""(?x)
    (?<![\w^.,/])                                  # not inside a word, an exponent (m^2), a ratio (L/2) or a number
    (?P<sign>[-+]\s?)?
    (?P<mant>
        [0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?                   # 1,234,567.8  (English thousands)
      | [0-9]{1,3}(?:[ \u00a0\u202f'’][0-9]{3})+(?:[.,][0-9]+)?  # 1 234 567,8  (spaces / apostrophes)
      | [0-9]+(?:[.,][0-9]+)?                                   # 3.14 / 3,14
      | [.,][0-9]+                                              # .5
    )
    (?:[ \t]?/[ \t]?(?P<den>[0-9]+(?:\.[0-9]+)?)(?![0-9]|[.,/][0-9]))?   # a fraction 1/6 (not a date 12/05/2024)
    (?:
        (?P<sci>[eE][-+]?[0-9]+)                                # 1.5e-3: no space, ASCII digits
      | \s*(?:[x×*·]|\\times|\\cdot)\s*10\s*(?:\^|\*\*)\s*\{?\s*(?P<ten>[-+]?\s*[0-9]+)\s*\}?  # 1.5 × 10^-3
      | \s*(?:[x×*·]|\\times|\\cdot)\s*10(?P<tensup>[⁺⁻]?[⁰¹²³⁴⁵⁶⁷⁸⁹]+)          # 1.5 × 10⁻³
      | (?P<powsup>[⁺⁻]?[⁰¹²³⁴⁵⁶⁷⁸⁹]+)                                            # 10⁻³, 2³
      | (?:\^|\*\*)\{?(?P<pow>[-+]?[0-9]+)\}?                                       # 10^3
    )?
    (?![0-9])
    """)

#: strong answer phrases, by tier (see the rules above); an optional copula is part of the phrase
_ANSWER_TIERS = (
    re.compile(r"(?i)\bfinal\s+answers?\b(?:\s+(?:is|are|would\s+be|will\s+be)\b)?"
               r"|\br[ée]ponses?\s+finales?\b(?:\s+(?:est|sont|serait|seraient)\b)?"),
    re.compile(r"(?i)\banswers?\b(?:\s+(?:is|are|would\s+be|will\s+be)\b)?|\br[ée]ponses?\b(?:\s+(?:est|sont)\b)?"
               r"|\br[ée]sultats?\b|\bresults?\b"),
)
_RELATION_RE = re.compile(r"=|≈|≃|~|\\approx")
#: what may stand between an answer phrase (or the start) and an opening number
_OPENING_SKIP = re.compile(
    r"""(?ix)(?:[\s:=≈≃~*$`]|\\approx|
        \b(?:about|approximately|approx\.?|roughly|around|circa|ca\.|nearly|close\s+to|equals?|is|of|
             (?:on|of)\s+the\s+order\s+of|environ|approximativement|à\s+peu\s+près|autour\s+de|
             de\s+l'ordre\s+de|est|vaut|égale?)(?!\w))*""")
_MAX_TAIL_WORDS = 3


class _Num:
    __slots__ = ("end", "start", "value")

    def __init__(self, start: int, end: int, value: float):
        self.start, self.end, self.value = start, end, value


def _numeric_text(text: str | None) -> str:
    """NFKC without touching superscripts/subscripts (they are not digits); Unicode minus and fraction slash."""
    parts = _SUPSUB_RE.split(text or "")
    t = "".join(p if i % 2 else unicodedata.normalize("NFKC", p) for i, p in enumerate(parts))
    return t.replace("−", "-").replace("\u2044", "/")


def _to_float(m: re.Match, decimal_comma: bool | None) -> float | None:
    mant = m.group("mant")
    mant = re.sub(r"[ \u00a0\u202f'’]", "", mant)
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", mant) and not (decimal_comma and mant.count(",") == 1):
        # "1,234" is read as one thousand two hundred thirty-four unless decimal_comma=True; "0,125" and "3,14" as
        # decimals (a group of thousands never starts with 0 and has three digits)
        if mant.startswith("0,"):
            mant = mant.replace(",", ".")
        else:
            mant = mant.replace(",", "")
    elif "," in mant:
        if decimal_comma is False:
            return None
        mant = mant.replace(",", ".")
    try:
        value = float(mant)
        if m.group("den") is not None:
            den = float(m.group("den"))
            if den == 0.0:
                return None
            value /= den
        for name, power_of_ten in (("sci", True), ("ten", True), ("tensup", True), ("powsup", False),
                                   ("pow", False)):
            raw = m.group(name)
            if raw is None:
                continue
            exponent = int(re.sub(r"\s", "", raw.translate(_SUP_DIGITS)).lstrip("eE"))
            value = value * 10.0 ** exponent if power_of_ten else value ** exponent
    except (ValueError, OverflowError, ZeroDivisionError):
        return None
    if isinstance(value, complex):
        return None
    if m.group("sign") and m.group("sign").strip() == "-":
        value = -value
    return value


def _numbers(t: str, decimal_comma: bool | None) -> list[_Num]:
    out = []
    for m in _NUM_RE.finditer(t):
        v = _to_float(m, decimal_comma)
        if v is not None and math.isfinite(v):
            out.append(_Num(m.start(), m.end(), v))
    return out


def parse_numbers(text: str, decimal_comma: bool | None = None) -> list[tuple[int, float]]:
    """Every number in ``text`` as (position, value), in order (positions in the normalised text).

    Handles signs (also the Unicode minus), scientific notation ("1.5e-3", "1.5 × 10^-3", "2.0\\times10^{4}",
    "3·10⁸"), superscript powers ("10⁻³"), fractions ("1/6"), thousands separators ("12,345", "12 345", "12'345"),
    the French decimal comma ("3,14") and units that follow ("9.81 m/s^2": the exponent of a unit is not a number).
    Superscripts and subscripts are not digits ("E₁", "H₂O"). ``decimal_comma=None`` decides "1,234" as thousands
    and "3,14"/"0,125" as decimals; True reads every single comma as a decimal comma.
    """
    return [(n.start, n.value) for n in _numbers(_numeric_text(text), decimal_comma)]


def _paren_mask(t: str) -> list[bool]:
    """For each character: inside round parentheses (the parentheses included)? An unmatched ")" is ignored."""
    mask, depth = [], 0
    for ch in t:
        if ch == "(":
            depth += 1
            mask.append(True)
        elif ch == ")":
            mask.append(depth > 0)
            depth = max(0, depth - 1)
        else:
            mask.append(depth > 0)
    return mask


def _prefer_outside(nums: list[_Num], inside: list[bool]) -> list[_Num]:
    out = [n for n in nums if not inside[n.start]]
    return out or nums


def _opening_value(t: str, start: int, stop: int, nums: list[_Num], inside: list[bool]) -> float | None:
    """Rule 2: the value stated by the clause that opens ``t[start:stop]`` with a number, or None."""
    pos = _OPENING_SKIP.match(t, start).end()
    first = next((n for n in nums if n.start >= pos), None)
    if first is None or first.start != pos:
        return None
    after = t[first.end:first.end + 1]
    if after in (".", ")") and re.match(r"[ \t]*\S", t[first.end + 1:]):
        try:
            k = int(t[first.start:first.end])
        except ValueError:
            k = None
        if k is not None and re.search(rf"(?m)^[ \t]*{k + 1}[.)][ \t]", t[first.end:stop]):
            return None  # "1. ...\n2. ...": a numbered list, not a value
    in_num = set()
    for n in nums:
        in_num.update(range(n.start, n.end))
    end = stop
    for i in range(first.end, stop):
        if inside[i] or i in in_num:
            continue
        ch = t[i]
        if ch in ",;\n" or (ch in ".!?" and (i + 1 >= len(t) or t[i + 1].isspace())):
            end = i
            break
    clause = [n for n in nums if first.end <= n.start < end]
    relations = [r for r in _RELATION_RE.finditer(t, first.end, end) if not inside[r.start()]]
    if relations:
        chain = _prefer_outside([n for n in clause if n.start >= relations[-1].end()], inside)
        return chain[0].value if chain else None
    if any(not inside[n.start] for n in clause):
        return None
    tail = "".join(ch for i, ch in enumerate(t[first.end:end], first.end) if not inside[i])
    return first.value if len(tail.split()) <= _MAX_TAIL_WORDS else None


def _answer_value(t: str, decimal_comma: bool | None) -> float | None:
    nums = _numbers(t, decimal_comma)
    if not nums:
        return None
    inside = _paren_mask(t) + [False]
    start, whole = 0, True
    for tier in _ANSWER_TIERS:
        phrases = [m for m in tier.finditer(t) if not inside[m.start()]]
        hit = next((m for m in reversed(phrases) if any(n.start >= m.end() for n in nums)), None)
        if hit is not None:
            start, whole = hit.end(), False
            break
    cands = [n for n in nums if n.start >= start]
    # rule 2: the opening statement (a whole text only when it is a single line)
    if not whole or "\n" not in t.strip():
        value = _opening_value(t, start, len(t), cands, inside)
        if value is not None:
            return value
    # rule 3: after the last "=" / "≈" outside parentheses
    for r in reversed([r for r in _RELATION_RE.finditer(t, start) if not inside[r.start()]]):
        after = _prefer_outside([n for n in cands if n.start >= r.end()], inside)
        if after:
            return after[0].value
    # rule 4: the first number of an answer segment, the last number of a whole text
    pool = _prefer_outside(cands, inside)
    return pool[-1].value if whole else pool[0].value


def check_numeric(answer_text: str, gold: float, rel_tol: float | None = 0.01, *,
                  decimal_comma: bool | None = None) -> bool | None:
    """Whether the answer's number equals ``gold`` within a relative tolerance; None when it states no number.

    The number read follows the rules in the comment above this function: the segment after the last answer phrase
    ("final answer" first, then "answer"/"réponse"/"result"), its opening statement ("42 N, reached at x = 5" ->
    42), else the value after its last "="/"≈", else its first number (the last number of a text without an
    answer phrase); parenthesised restatements never override a number outside parentheses. The same rules read
    the bank's gold texts ("About 25465 Pa (25.5 kPa)", "25, atteinte en x = y = 5", "⟨E⟩ = 2.5 E₁") and model
    replies ("... so my final answer is 42 N"). Units are not converted (the bank states its numeric answers in the
    unit the question asks for). ``gold == 0`` uses ``rel_tol`` as an absolute tolerance.
    """
    value = _answer_value(_numeric_text(answer_text), decimal_comma)
    if value is None:
        return None
    tol = 0.01 if rel_tol is None else float(rel_tol)
    gold = float(gold)
    if gold == 0.0:
        return abs(value) <= tol
    return math.isclose(value, gold, rel_tol=tol, abs_tol=0.0)


# ============================================================================= agreement

def cohen_kappa(a: Sequence, b: Sequence) -> float:
    """Cohen's kappa of two raters' labels: (p_o - p_e) / (1 - p_e).

    p_o is the observed agreement, p_e the agreement expected by chance from each rater's label frequencies.
    Labels can be any hashable values (grade labels, 0/1, booleans). When both raters always give the same single
    label (p_e = 1) kappa is undefined; we return 1.0 if they agree everywhere (they do, trivially), else 0.0.
    """
    a, b = list(a), list(b)
    if len(a) != len(b):
        raise ValueError(f"the two label sequences differ in length ({len(a)} vs {len(b)})")
    if not a:
        raise ValueError("cohen_kappa needs at least one pair of labels")
    n = len(a)
    p_o = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    p_e = sum(ca[k] * cb.get(k, 0) for k in ca) / (n * n)
    if p_e >= 1.0:
        return 1.0 if p_o >= 1.0 else 0.0
    return (p_o - p_e) / (1.0 - p_e)

