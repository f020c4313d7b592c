"""Tokenisation of question-answer pairs, TOFU style (``data_module.py`` ``convert_raw_data_to_model_format``).

A pair is ``prompt = "Question: q\\nAnswer:"`` followed by ``" " + answer`` and one EOS token. Labels are -100 on the
prompt and on the padding, the answer's ids on the answer and the EOS id after it, so the loss covers the answer and
its end (and :func:`~lionsnb.unlearning.sequence_nll` / number of labels is TOFU's per-token answer loss). Batches are
right-padded.

:func:`word_tokenizer` builds the word-level tokenizer of the tiny GPT in memory (``tokenizers.WordLevel`` wrapped in
``PreTrainedTokenizerFast``), so ``generate`` and ``decode`` work as for any HF model.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lionsnb.unlearning.losses import IGNORE_INDEX

PAD, UNK, EOS = "[PAD]", "[UNK]", "[EOS]"


def format_prompt(question: str) -> str:
    """The prompt of a question (no chat template: short sequences keep CPU training cheap)."""
    return f"Question: {question}\nAnswer:"


def word_tokenizer(texts: Sequence[str]):
    """A word-level ``PreTrainedTokenizerFast`` over every word and punctuation mark of ``texts`` (plus the prompt's
    words), with ``[PAD]`` = 0, ``[UNK]`` = 1 and ``[EOS]`` = 2."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Whitespace()
    vocab = {PAD: 0, UNK: 1, EOS: 2}
    for text in list(texts) + [format_prompt("?")]:
        for word, _ in pre.pre_tokenize_str(text):
            if word not in vocab:
                vocab[word] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, unk_token=UNK, eos_token=EOS,
                                   padding_side="right")


@dataclass
class Encoded:
    """Right-padded token ids, attention mask and TOFU labels of N sequences; ``n_labels`` = labelled tokens per row
    (answer + EOS); ``lengths`` = real tokens per row."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    n_labels: torch.Tensor
    lengths: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def rows(self, index) -> Encoded:
        """A sub-batch (rows ``index``), trimmed to its longest row."""
        index = torch.as_tensor(index, dtype=torch.long)
        width = int(self.lengths[index].max()) if len(index) else 1
        return Encoded(self.input_ids[index, :width], self.attention_mask[index, :width], self.labels[index, :width],
                       self.n_labels[index], self.lengths[index])

    def to(self, device) -> Encoded:
        return Encoded(*(t.to(device) for t in (self.input_ids, self.attention_mask, self.labels, self.n_labels,
                                                self.lengths)))


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_pairs(tokenizer, questions: Sequence[str], answers: Sequence[str], max_length: int | None = None) -> Encoded:
    """Encode (question, answer) pairs: prompt ids + answer ids + EOS; labels -100 on the prompt and the padding."""
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions and {len(answers)} answers")
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; set tokenizer.eos_token first")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows, labs = [], []
    for q, a in zip(questions, answers):
        prompt = _ids(tokenizer, format_prompt(q))
        answer = _ids(tokenizer, " " + a) + [tokenizer.eos_token_id]
        ids = prompt + answer
        lab = [IGNORE_INDEX] * len(prompt) + answer
        if max_length is not None and len(ids) > max_length:
            raise ValueError(f"a pair has {len(ids)} tokens, more than max_length = {max_length}: raise the model's "
                             f"n_positions or shorten the text ({q!r} / {a!r})")
        rows.append(ids)
        labs.append(lab)
    width = max(len(r) for r in rows)
    n = len(rows)
    input_ids = torch.full((n, width), pad, dtype=torch.long)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, (r, lab) in enumerate(zip(rows, labs)):
        input_ids[i, :len(r)] = torch.tensor(r)
        labels[i, :len(lab)] = torch.tensor(lab)
        mask[i, :len(r)] = 1
    n_labels = (labels != IGNORE_INDEX).sum(1)
    return Encoded(input_ids, mask, labels, n_labels, mask.sum(1))


def encode_prompts(tokenizer, questions: Sequence[str]) -> tuple[list[list[int]], int]:
    """Token ids of the prompts (for greedy generation), unpadded, and the longest length."""
    ids = [_ids(tokenizer, format_prompt(q)) for q in questions]
    return ids, max(len(i) for i in ids)
