"""Exercise checks: solved, not attempted, wrong and crashing attempts."""
from __future__ import annotations

import torch

from lionsnb.exercises import check_exercise, close


def reference(x):
    return x * 2


CASES = [(torch.tensor([1.0, 2.0]),), (3.0,)]


def test_solved_uses_students_function(capsys):
    student = lambda x: x + x  # noqa: E731
    result = check_exercise("double", student, reference, CASES)
    assert result.status == "solved" and result.fn is student and "correct" in capsys.readouterr().out


def test_stub_falls_back_to_reference(capsys):
    def stub(x):
        raise NotImplementedError

    result = check_exercise("double", stub, reference, CASES)
    assert result.status == "not attempted" and result.fn is reference and result(2.0) == 4.0
    assert "not implemented yet" in capsys.readouterr().out


def test_wrong_answer_gives_feedback_and_reference(capsys):
    class Ctx:
        exercises = {}

    result = check_exercise("double", lambda x: x * 3, reference, CASES, hint="multiply by two", ctx=Ctx)
    out = capsys.readouterr().out
    assert result.status == "incorrect" and "check 1" in out and "multiply by two" in out
    assert Ctx.exercises == {"double": "incorrect"}


def test_crash_and_none_are_handled():
    assert check_exercise("d", lambda x: 1 / 0, reference, CASES).status == "incorrect"
    assert check_exercise("d", lambda x: None, reference, CASES).status == "not attempted"


def test_close():
    assert close((1.0, torch.ones(2)), (1.0 + 1e-9, torch.ones(2)))
    assert not close(torch.ones(2), torch.ones(3))
    assert not close([1.0], [1.0, 2.0])
