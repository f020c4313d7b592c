"""A generated multi-task sequence mixture with a task tag (the teaching stand-in for UNCURL's SuperGLUE tasks).

Every example reads ``<task> x1 ... xn = y1 ... ym <eos>`` over a shared vocabulary of the letters a-h and the
digits 0-9; the model sees the whole sequence and is trained to predict the answer ``y1 ... ym <eos>``.

==========  ==================================  =====================================
task        input                               answer
==========  ==================================  =====================================
copy        4-6 symbols                         the same symbols
rev         4-6 symbols                         reversed
sort        4-6 letters                         sorted alphabetically
add         two digits                          their sum mod 10 (``<add> 3 4 = 7``)
succ        4-6 symbols                         each symbol's successor (h->a, 9->0)
parity      4-6 digits                          0 or 1 per digit (even or odd)
count       4-6 symbols                         the number of symbols, as a digit
kv          2-3 pairs ``k v`` and a query key   the value stored under the query
==========  ==================================  =====================================

Smoke and teach use the first four tasks, full all eight.  Examples are drawn from a seeded torch generator, so a
batch is a pure function of (tasks, size, seed).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

LETTERS = tuple("abcdefgh")
DIGITS = tuple("0123456789")
ALL_TASKS = ("copy", "rev", "sort", "add", "succ", "parity", "count", "kv")
SPECIALS = ("<pad>", "<eos>", "=")
PAD, EOS, EQ = 0, 1, 2
MIN_LEN, MAX_LEN = 4, 6
#: tag + 6 inputs + '=' + 6 answers + eos (kv: tag + 6 + query + '=' + 1 + eos)
SEQ_LEN = 1 + MAX_LEN + 1 + MAX_LEN + 1

VOCAB: tuple[str, ...] = SPECIALS + tuple(f"<{t}>" for t in ALL_TASKS) + LETTERS + DIGITS
TOKEN = {s: i for i, s in enumerate(VOCAB)}
VOCAB_SIZE = len(VOCAB)


def _check_tasks(tasks: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    tasks = tuple(tasks)
    unknown = [t for t in tasks if t not in ALL_TASKS]
    if not tasks or unknown:
        raise ValueError(f"unknown task(s) {unknown}: choose from {', '.join(ALL_TASKS)}")
    return tasks


def _symbols(kind: str) -> list[str]:
    return list(LETTERS) if kind == "letters" else list(DIGITS) if kind == "digits" else list(LETTERS + DIGITS)


def make_example(task: str, gen: torch.Generator) -> tuple[list[str], list[str]]:
    """One example of ``task`` as (prompt tokens, answer tokens), both as strings (eos appended by encode)."""
    def draw(pool: list[str], n: int) -> list[str]:
        return [pool[i] for i in torch.randint(0, len(pool), (n,), generator=gen).tolist()]

    n = int(torch.randint(MIN_LEN, MAX_LEN + 1, (1,), generator=gen))
    if task == "copy":
        x = draw(_symbols("any"), n)
        y = list(x)
    elif task == "rev":
        x = draw(_symbols("any"), n)
        y = x[::-1]
    elif task == "sort":
        x = draw(_symbols("letters"), n)
        y = sorted(x)
    elif task == "add":
        x = draw(_symbols("digits"), 2)
        y = [str((int(x[0]) + int(x[1])) % 10)]
    elif task == "succ":
        x = draw(_symbols("any"), n)
        y = [LETTERS[(LETTERS.index(s) + 1) % 8] if s in LETTERS else DIGITS[(int(s) + 1) % 10] for s in x]
    elif task == "parity":
        x = draw(_symbols("digits"), n)
        y = [str(int(s) % 2) for s in x]
    elif task == "count":
        x = draw(_symbols("any"), n)
        y = [str(n)]
    elif task == "kv":
        pairs = int(torch.randint(2, 4, (1,), generator=gen))
        keys = [LETTERS[i] for i in torch.randperm(8, generator=gen)[:pairs].tolist()]
        values = draw(_symbols("digits"), pairs)
        q = int(torch.randint(0, pairs, (1,), generator=gen))
        x = [t for kv in zip(keys, values) for t in kv] + [keys[q]]
        y = [values[q]]
    else:
        _check_tasks([task])
        raise AssertionError
    return [f"<{task}>"] + x + ["="], y


@dataclass
class Batch:
    """Encoded examples: ``tokens`` [B, L] (right-padded with 0), the answer mask over targets, task ids."""

    tokens: torch.Tensor       # [B, L] long
    answer_mask: torch.Tensor  # [B, L] bool: position t predicts an answer token (tokens[:, t + 1] is one)
    task: torch.Tensor         # [B] long, index into the batch's task tuple
    tasks: tuple[str, ...]

    @property
    def inputs(self) -> torch.Tensor:
        """The tokens the model reads (all but the last position)."""
        return self.tokens[:, :-1]

    @property
    def targets(self) -> torch.Tensor:
        return self.tokens[:, 1:]

    @property
    def mask(self) -> torch.Tensor:
        """Answer mask aligned with ``inputs``/``targets``."""
        return self.answer_mask[:, :-1]

    @property
    def valid(self) -> torch.Tensor:
        """Positions of ``inputs`` that hold a real token (not padding)."""
        return self.inputs != PAD

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def subset(self, task: str) -> Batch:
        """The examples of one task."""
        keep = self.task == self.tasks.index(task)
        return Batch(self.tokens[keep], self.answer_mask[keep], self.task[keep], self.tasks)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.tokens.to(device), self.answer_mask.to(device), self.task.to(device), self.tasks)


def encode(prompt: list[str], answer: list[str]) -> tuple[list[int], list[bool]]:
    """Token ids of ``prompt + answer + <eos>`` and, per position t, whether token t + 1 is an answer token."""
    ids = [TOKEN[s] for s in prompt] + [TOKEN[s] for s in answer] + [EOS]
    mask = [False] * len(ids)
    for t in range(len(prompt) - 1, len(ids) - 1):
        mask[t] = True
    return ids, mask


def decode(ids: list[int] | torch.Tensor) -> str:
    """Token ids back to text (padding dropped)."""
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
    return " ".join(VOCAB[i] for i in ids if i != PAD)


def make_batch(tasks: tuple[str, ...] | list[str], n_per_task: int | None = None, seed: int = 0,
               n: int | None = None, task_weights: list[float] | None = None) -> Batch:
    """A seeded batch: ``n_per_task`` examples of every task (in task order), or ``n`` examples of random tasks."""
    tasks = _check_tasks(tasks)
    gen = torch.Generator().manual_seed(int(seed))
    if n_per_task is not None:
        task_ids = [i for i in range(len(tasks)) for _ in range(n_per_task)]
    elif n is not None:
        w = torch.tensor(task_weights if task_weights is not None else [1.0] * len(tasks), dtype=torch.float)
        task_ids = torch.multinomial(w, n, replacement=True, generator=gen).tolist()
    else:
        raise ValueError("give n_per_task (a balanced batch) or n (random tasks)")
    tokens = torch.full((len(task_ids), SEQ_LEN), PAD, dtype=torch.long)
    amask = torch.zeros((len(task_ids), SEQ_LEN), dtype=torch.bool)
    for row, t in enumerate(task_ids):
        ids, mask = encode(*make_example(tasks[t], gen))
        tokens[row, :len(ids)] = torch.tensor(ids)
        amask[row, :len(mask)] = torch.tensor(mask)
    return Batch(tokens, amask, torch.tensor(task_ids, dtype=torch.long), tasks)


def calibration_batches(task: str, n_examples: int, seed: int, batch_size: int = 64,
                        tasks: tuple[str, ...] | None = None) -> list[Batch]:
    """Calibration data of one target task (what UNCURL measures router statistics on), split into batches."""
    tasks = _check_tasks(tasks if tasks is not None else (task,))
    if task not in tasks:
        raise ValueError(f"task {task!r} is not among {tasks}")
    full = make_batch((task,), n_per_task=n_examples, seed=seed)
    full = Batch(full.tokens, full.answer_mask, torch.full_like(full.task, tasks.index(task)), tasks)
    return [Batch(full.tokens[i:i + batch_size], full.answer_mask[i:i + batch_size], full.task[i:i + batch_size],
                  tasks) for i in range(0, len(full), batch_size)]
