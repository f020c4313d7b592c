"""Characters, the Levenshtein distance and its neighbourhoods (LipsLev, ICLR 2025, Sec. 3-4).

Everything here is pure Python/NumPy on sequences of token ids (or plain strings): the alphabet
that turns text into ids, the Levenshtein DP table and an optimal edit script, the canonical
enumeration of the unique strings at distance exactly 1 (and a deduplicated ball for k >= 2 on
short strings), the neighbour-count formula, and the ERP distance of real sequences (Def. 4.1).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Edit = tuple[str, int, int]  # (kind in {"sub", "del", "ins"}, position, char id; 0 for deletions)


@dataclass(frozen=True)
class Alphabet:
    """The model's characters: id ``i + 1`` is ``chars[i]``; id 0 is padding.

    Encoding lowercases each character and silently drops the ones outside the alphabet, as the
    official code does (``utils.py``). Dropping is 1-Lipschitz for the Levenshtein distance: one
    edit of the raw text is at most one edit of the encoded text.
    """

    chars: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(set(self.chars)) != len(self.chars) or any(len(c) != 1 for c in self.chars):
            raise ValueError("an Alphabet needs distinct single characters")

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> Alphabet:
        """Distinct lowercased characters in first-occurrence order (the official construction)."""
        seen: dict[str, None] = {}
        for text in texts:
            for ch in text.lower():
                seen.setdefault(ch, None)
        return cls(tuple(seen))

    @classmethod
    def from_char_to_id(cls, mapping: dict[str, int]) -> Alphabet:
        """From a ``{char: id}`` map with ids 1..N (e.g. the official ``char_to_id`` JSON)."""
        ids = sorted(mapping.values())
        if ids != list(range(1, len(ids) + 1)):
            raise ValueError("char_to_id must map characters to the ids 1..N (0 is padding)")
        return cls(tuple(sorted(mapping, key=mapping.__getitem__)))

    @classmethod
    def from_json(cls, path: str | Path) -> Alphabet:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no alphabet file at {path}: pass the path of a char_to_id JSON file")
        return cls.from_char_to_id(json.loads(path.read_text(encoding="utf-8")))

    @property
    def size(self) -> int:
        """sigma, the number of characters (padding not counted)."""
        return len(self.chars)

    @property
    def char_to_id(self) -> dict[str, int]:
        return {c: i + 1 for i, c in enumerate(self.chars)}

    def encode(self, text: str) -> list[int]:
        table = self.char_to_id
        return [table[c] for c in text.lower() if c in table]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[i - 1] for i in ids if i > 0)

    def dropped(self, text: str) -> str:
        """The characters of ``text`` that encoding drops (after lowercasing)."""
        table = self.char_to_id
        return "".join(c for c in text.lower() if c not in table)


# --------------------------------------------------------------------------- Levenshtein

def levenshtein_table(a: Sequence, b: Sequence) -> np.ndarray:
    """The DP table D with D[i, j] = d_Lev(a[:i], b[:j]); unit costs for substitution, insertion, deletion."""
    n, m = len(a), len(b)
    table = np.zeros((n + 1, m + 1), dtype=np.int64)
    table[:, 0] = np.arange(n + 1)
    table[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            table[i, j] = min(table[i - 1, j] + 1, table[i, j - 1] + 1,
                              table[i - 1, j - 1] + (a[i - 1] != b[j - 1]))
    return table


def levenshtein(a: Sequence, b: Sequence) -> int:
    """d_Lev(a, b) with two rows of the DP table (strings or id lists)."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def edit_script(a: Sequence, b: Sequence) -> list[tuple[str, int, object, object]]:
    """One optimal edit script from ``a`` to ``b`` by backtracking the DP table.

    Returns ``(op, i, x, y)`` with op in keep/sub/del/ins, ``i`` the position in ``a``; the number
    of non-keep operations equals ``levenshtein(a, b)``.
    """
    table = levenshtein_table(a, b)
    i, j, ops = len(a), len(b), []
    while i > 0 or j > 0:
        if i > 0 and j > 0 and table[i, j] == table[i - 1, j - 1] + (a[i - 1] != b[j - 1]):
            ops.append(("keep" if a[i - 1] == b[j - 1] else "sub", i - 1, a[i - 1], b[j - 1]))
            i, j = i - 1, j - 1
        elif i > 0 and table[i, j] == table[i - 1, j] + 1:
            ops.append(("del", i - 1, a[i - 1], None))
            i -= 1
        else:
            ops.append(("ins", i, None, b[j - 1]))
            j -= 1
    return ops[::-1]


# --------------------------------------------------------------------------- neighbourhoods

def runs(seq: Sequence) -> int:
    """Number of maximal runs of equal consecutive symbols (0 for the empty sequence)."""
    return sum(1 for j in range(len(seq)) if j == 0 or seq[j] != seq[j - 1])


def neighbour_count(n: int, sigma: int, n_runs: int) -> int:
    """|N_1| = (2n + 1)(sigma - 1) + 1 + runs: unique strings at distance exactly 1 of a length-n string."""
    return (2 * n + 1) * (sigma - 1) + 1 + n_runs


def neighbour_edits(seq: Sequence[int], symbols: Sequence[int]) -> list[Edit]:
    """The canonical edits whose results are exactly the unique strings at distance 1 of ``seq``.

    Substitute position j by c != seq[j]; delete j only at the start of a run; insert c before j
    only if j = 0 or seq[j-1] != c (the leftmost of equivalent insertions). No two edits give the
    same string, so ``len(...) == neighbour_count(len(seq), len(symbols), runs(seq))``.
    """
    n = len(seq)
    edits: list[Edit] = []
    for j in range(n):
        edits.extend(("sub", j, c) for c in symbols if c != seq[j])
    edits.extend(("del", j, 0) for j in range(n) if j == 0 or seq[j] != seq[j - 1])
    for j in range(n + 1):
        edits.extend(("ins", j, c) for c in symbols if j == 0 or seq[j - 1] != c)
    return edits


def apply_edit(seq: Sequence, edit: Edit) -> tuple:
    kind, j, c = edit
    seq = tuple(seq)
    if kind == "sub":
        return seq[:j] + (c,) + seq[j + 1:]
    if kind == "del":
        return seq[:j] + seq[j + 1:]
    if kind == "ins":
        return seq[:j] + (c,) + seq[j:]
    raise ValueError(f"unknown edit kind {kind!r}: use sub, del or ins")


def neighbours(seq: Sequence[int], symbols: Sequence[int]) -> list[tuple]:
    """The unique strings at distance exactly 1 (canonical order)."""
    return [apply_edit(seq, e) for e in neighbour_edits(seq, symbols)]


def ball(seq: Sequence[int], symbols: Sequence[int], k: int) -> dict[tuple, int]:
    """Every string within distance ``k`` of ``seq`` mapped to its distance (BFS with deduplication).

    The ball grows like |N_1|^k / k!; keep it to short strings and small alphabets for k >= 2.
    """
    start = tuple(seq)
    dist = {start: 0}
    frontier = [start]
    for d in range(1, k + 1):
        nxt = []
        for s in frontier:
            for t in neighbours(s, symbols):
                if t not in dist:
                    dist[t] = d
                    nxt.append(t)
        frontier = nxt
    return dist


def count_ball(seq: Sequence, sigma: int, k: int) -> list[int]:
    """Exact number of strings over ``sigma`` symbols at Levenshtein distance exactly d from ``seq``, d = 0..k.

    A counting Levenshtein automaton: reading a candidate string y one symbol at a time, the DP column
    (d_Lev(seq[:i], y[:j]) for i = 0..n, clipped at k + 1) is the state; only the 2k + 1 entries with
    |i - j| <= k can be <= k, so the state is that band. Every y has exactly one state path, so summing
    the multiplicities of the paths that end with D[n] = d over all lengths counts each string once.
    Symbols enter only through which band positions they match, so all symbols absent from the band's
    window of ``seq`` share one transition (with multiplicity). Away from the ends of ``seq`` a transition
    depends only on (state, match mask), so it is computed once and looked up (vectorised) afterwards.
    Counts are int64 while the ball provably fits, Python integers otherwise. No enumeration: exact
    counts for AG-News-sized strings in seconds.
    """
    seq = list(seq)
    n, cap, width = len(seq), k + 1, 2 * k + 1
    if k < 0:
        raise ValueError(f"k = {k}: the radius must be >= 0")
    if len(set(seq)) > sigma:
        raise ValueError(f"the string uses {len(set(seq))} distinct symbols but sigma = {sigma}: "
                         "sigma is the alphabet size and must cover every symbol of the string")
    # every string of the ball comes from some script of <= k edits, each one of <= (2(n+k)+1) sigma choices
    bound = sum(((2 * (n + k) + 1) * sigma) ** d for d in range(k + 1))
    dtype = np.int64 if bound < 2 ** 62 else object
    ids: dict[tuple, int] = {}
    rows: list[tuple] = []

    def intern(state: tuple) -> int:
        if state not in ids:
            ids[state] = len(rows)
            rows.append(state)
        return ids[state]

    hist = [0] * (k + 1)
    values = np.zeros((0, width), dtype=np.int64)

    def accept(j: int, state_ids: np.ndarray, counts: np.ndarray) -> None:
        nonlocal values
        t = n - (j - k)
        if not 0 <= t < width or len(state_ids) == 0:
            return
        if len(values) < len(rows):
            values = np.array(rows, dtype=np.int64).reshape(len(rows), width)
        at_n = values[state_ids, t]
        for d in range(k + 1):
            hist[d] += int(counts[at_n == d].sum())

    # column 0: D[i, 0] = i; band positions t = 0..2k hold rows i = j - k + t
    cur = np.array([intern(tuple(i if 0 <= i <= min(n, k) else cap for i in range(-k, k + 1)))])
    counts = np.array([1], dtype=dtype)
    accept(0, cur, counts)
    tables: dict[tuple, np.ndarray] = {}  # interior transitions: mask -> new id per state id (-1 dead, -2 unknown)
    for j in range(n + k):
        lo = j + 1 - k  # row of band position 0 in the new column j + 1
        window = [seq[i - 1] if 1 <= i <= n else None for i in range(lo, lo + width)]
        present = {c for c in window if c is not None}
        masks = [(tuple(w == c for w in window), 1) for c in present]
        if sigma > len(present):
            masks.append(((False,) * width, sigma - len(present)))
        interior = lo >= 1 and lo + width - 1 <= n
        targets, weights = [], []
        for mask, mult in masks:
            if interior:
                table = tables.get(mask)
                if table is None or len(table) < len(rows):
                    old = table if table is not None else np.zeros(0, dtype=np.int64)
                    table = np.concatenate([old, np.full(len(rows) - len(old), -2, dtype=np.int64)])
                    tables[mask] = table
                new = table[cur]
                for pos in np.flatnonzero(new == -2).tolist():
                    nxt = _step(rows[cur[pos]], mask, lo, j + 1, n, cap, width)
                    new[pos] = -1 if nxt is None else intern(nxt)
                    if len(table) < len(rows):  # intern() added states: grow the table before writing
                        table = np.concatenate([table, np.full(len(rows) - len(table), -2, dtype=np.int64)])
                        tables[mask] = table
                    table[cur[pos]] = new[pos]
            else:
                new = np.array([-1 if (nxt := _step(rows[s], mask, lo, j + 1, n, cap, width)) is None
                                else intern(nxt) for s in cur.tolist()], dtype=np.int64)
            alive = new >= 0
            targets.append(new[alive])
            weights.append(counts[alive] * mult)
        merged = np.concatenate(targets) if targets else np.zeros(0, dtype=np.int64)
        cur, inverse = np.unique(merged, return_inverse=True)
        counts = np.zeros(len(cur), dtype=dtype)
        if len(merged):
            np.add.at(counts, inverse, np.concatenate(weights))
        accept(j + 1, cur, counts)
    return hist


def _step(state: tuple, mask: tuple, lo: int, col: int, n: int, cap: int, width: int) -> tuple | None:
    """One column of the clipped DP: new[i] = min(old[i] + 1, new[i-1] + 1, old[i-1] + mismatch)."""
    new = [cap] * width
    for t in range(width):
        i = lo + t
        if i < 0 or i > n:
            continue
        if i == 0:
            new[t] = min(col, cap)
            continue
        up = state[t + 1] + 1 if t + 1 < width else cap
        left = new[t - 1] + 1 if t >= 1 else cap
        diag = state[t] + (not mask[t])
        new[t] = min(up, left, diag, cap)
    return tuple(new) if min(new) < cap else None


def ball_size(seq: Sequence, sigma: int, k: int) -> int:
    """|N_<=k(seq)|: the number of strings within Levenshtein distance k (the string itself included)."""
    return sum(count_ball(seq, sigma, k))


# --------------------------------------------------------------------------- ERP

def erp_distance(a: np.ndarray, b: np.ndarray, p: float = 2.0) -> float:
    """ERP distance of real sequences (rows are vectors), the edit distance whose gap is the zero vector.

    d(A, B) = min(||a_1|| + d(A_2:, B), ||b_1|| + d(A, B_2:), ||a_1 - b_1|| + d(A_2:, B_2:)) with the
    p-norm (Def. 4.1, after Chen & Ng 2004), as an O(mn) DP.
    """
    a, b = np.atleast_2d(np.asarray(a, dtype=float)), np.atleast_2d(np.asarray(b, dtype=float))
    na, nb = np.linalg.norm(a, ord=p, axis=1), np.linalg.norm(b, ord=p, axis=1)
    m, n = len(a), len(b)
    table = np.zeros((m + 1, n + 1))
    table[1:, 0] = np.cumsum(na)
    table[0, 1:] = np.cumsum(nb)
    for i in range(1, m + 1):
        for j in range(1, n + 1):
            table[i, j] = min(table[i - 1, j] + na[i - 1], table[i, j - 1] + nb[j - 1],
                              table[i - 1, j - 1] + np.linalg.norm(a[i - 1] - b[j - 1], ord=p))
    return float(table[m, n])


def one_hot(seq: Sequence[int], sigma: int) -> np.ndarray:
    """Rows e_c for the ids 1..sigma (the one-hot embedding of Lemma S4)."""
    out = np.zeros((len(seq), sigma))
    for i, c in enumerate(seq):
        out[i, c - 1] = 1.0
    return out
