"""A paged KV cache (the idea of vLLM's PagedAttention, Kwon et al., SOSP 2023), written from scratch.

A contiguous KV cache reserves ``max_len`` token slots per sequence up front, because it cannot know how long
the sequence will grow; whatever the sequence does not use is wasted. The paged cache instead splits memory into
fixed-size **physical blocks** of ``block_size`` token slots (each block holds the keys and values of every
layer for those slots) and gives every sequence a **block table**, the list of its physical blocks in logical
order, exactly like a page table maps virtual to physical pages:

    logical position p of sequence s  ->  block table[s][p // block_size], slot p % block_size.

* Blocks are allocated on demand, one when a sequence crosses a block boundary, so a sequence wastes fewer than
  ``block_size`` slots (only its last block is partly empty), against ``max_len - length`` for a reservation.
* Blocks carry **reference counts**: :meth:`BlockManager.fork` gives a new sequence the same blocks as an existing
  one (a shared prompt, parallel samples), and a block returns to the free list when its count drops to 0.
* **Copy-on-write**: a sequence about to write into a block that another sequence also references first copies it
  to a block of its own (only a partly filled last block can be written into, so only that one is ever copied).
* Attention reads K/V **through the block table**: :meth:`PagedKVCache.gather` assembles a sequence's contiguous
  keys and values, and :func:`paged_attention` runs the softmax block by block (online softmax), reading each
  physical block where it lies, as vLLM's kernel does.

:class:`BlockManager` is the bookkeeping alone (tables, lengths, reference counts, free list); the serving
simulation uses it without any tensors. :class:`PagedKVCache` adds the block pool tensors, and
:class:`PagedSequence` lets :class:`lionsnb.inference.llama.LlamaRunner` decode one sequence through the paged
cache (it has the same ``store`` / ``length`` interface as :class:`~lionsnb.inference.llama.KVCache`).
"""
from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from lionsnb.inference.llama import LlamaRunner, next_token


class OutOfBlocks(RuntimeError):
    """The pool has no free block left (a server would preempt or queue a sequence here)."""


def blocks_needed(n_tokens: int, block_size: int) -> int:
    """Physical blocks that hold ``n_tokens`` tokens: ceil(n_tokens / block_size) (0 for an empty sequence)."""
    if n_tokens < 0 or block_size < 1:
        raise ValueError(f"need n_tokens >= 0 and block_size >= 1, got {n_tokens} and {block_size}")
    return -(-n_tokens // block_size)


@dataclass
class BlockManager:
    """Block tables, sequence lengths, reference counts and the free list of a pool of ``num_blocks`` blocks.

    Sequences are named by any hashable id. Writing tokens is a two-step affair: :meth:`prepare_append` makes
    the slots of the next ``n`` tokens writable (allocates blocks, copies a shared last block) and returns the
    copies the caller must perform on the pool tensors as ``(source, destination)`` pairs; :meth:`commit` then
    advances the length. :meth:`append` does both for pure bookkeeping.
    """

    num_blocks: int
    block_size: int
    ref_counts: list[int] = field(init=False)
    tables: dict[Hashable, list[int]] = field(init=False, default_factory=dict)
    lengths: dict[Hashable, int] = field(init=False, default_factory=dict)
    copies: int = field(init=False, default=0)  # copy-on-write events so far

    def __post_init__(self):
        if self.num_blocks < 1 or self.block_size < 1:
            raise ValueError(f"need num_blocks >= 1 and block_size >= 1, got {self.num_blocks}, {self.block_size}")
        self.ref_counts = [0] * self.num_blocks
        # a stack: the lowest free block id is allocated first (reproducible tables)
        self._free = list(range(self.num_blocks - 1, -1, -1))

    # ------------------------------------------------------------------ pool state
    @property
    def free_blocks(self) -> int:
        return len(self._free)

    @property
    def used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    def tokens_stored(self) -> int:
        """Distinct token slots that hold a token of some sequence (a shared slot counts once)."""
        filled: dict[int, int] = {}
        for seq, table in self.tables.items():
            length = self.lengths[seq]
            for j, block in enumerate(table):
                filled[block] = max(filled.get(block, 0), min(self.block_size, length - j * self.block_size))
        return sum(filled.values())

    def utilisation(self) -> float:
        """Fraction of the allocated slots that hold tokens (1.0 when nothing is allocated)."""
        used = self.used_blocks * self.block_size
        return self.tokens_stored() / used if used else 1.0

    def check(self) -> None:
        """Assert the invariants: every reference count equals the number of tables holding the block, free
        blocks have count 0, and each table has exactly ceil(length / block_size) blocks."""
        counts = [0] * self.num_blocks
        for seq, table in self.tables.items():
            if len(table) != blocks_needed(self.lengths[seq], self.block_size):
                raise AssertionError(f"sequence {seq!r}: {len(table)} blocks for {self.lengths[seq]} tokens")
            for block in table:
                counts[block] += 1
        if counts != self.ref_counts:
            raise AssertionError(f"reference counts {self.ref_counts} but the tables say {counts}")
        free = set(self._free)
        if len(free) != len(self._free) or any(self.ref_counts[b] for b in free):
            raise AssertionError("the free list holds a referenced or duplicated block")
        if len(free) + sum(1 for c in counts if c) != self.num_blocks:
            raise AssertionError("a block is neither free nor referenced (leaked)")

    # ------------------------------------------------------------------ sequences
    def add_sequence(self, seq: Hashable) -> None:
        if seq in self.tables:
            raise ValueError(f"sequence {seq!r} exists already")
        self.tables[seq] = []
        self.lengths[seq] = 0

    def _allocate(self) -> int:
        if not self._free:
            raise OutOfBlocks(f"all {self.num_blocks} blocks are in use: free a sequence or build a larger pool")
        block = self._free.pop()
        self.ref_counts[block] = 1
        return block

    def _release(self, block: int) -> None:
        if self.ref_counts[block] <= 0:
            raise AssertionError(f"block {block} released more often than referenced")
        self.ref_counts[block] -= 1
        if self.ref_counts[block] == 0:
            self._free.append(block)

    def fork(self, parent: Hashable, child: Hashable) -> None:
        """A new sequence ``child`` whose tokens so far are those of ``parent``: same blocks, counts + 1."""
        if parent not in self.tables:
            raise KeyError(f"unknown sequence {parent!r}")
        self.add_sequence(child)
        self.tables[child] = list(self.tables[parent])
        self.lengths[child] = self.lengths[parent]
        for block in self.tables[child]:
            self.ref_counts[block] += 1

    def prepare_append(self, seq: Hashable, n_tokens: int) -> list[tuple[int, int]]:
        """Make positions length .. length + n_tokens - 1 of ``seq`` writable; return the (source, destination)
        block copies that copy-on-write requires. Nothing changes when the pool runs out of blocks."""
        table, length = self.tables[seq], self.lengths[seq]
        partial = length % self.block_size != 0
        shared_last = partial and n_tokens > 0 and self.ref_counts[table[-1]] > 1
        new_blocks = blocks_needed(length + n_tokens, self.block_size) - len(table)
        if new_blocks + shared_last > len(self._free):
            raise OutOfBlocks(f"sequence {seq!r} needs {new_blocks + shared_last} more blocks, "
                              f"{len(self._free)} are free")
        copies = []
        if shared_last:  # copy-on-write: the last block is partly filled and someone else holds it too
            source = table[-1]
            table[-1] = self._allocate()
            self._release(source)
            copies.append((source, table[-1]))
            self.copies += 1
        for _ in range(new_blocks):
            table.append(self._allocate())
        return copies

    def commit(self, seq: Hashable, n_tokens: int) -> None:
        """Advance the length of ``seq`` by ``n_tokens`` (after :meth:`prepare_append` and the writes)."""
        if blocks_needed(self.lengths[seq] + n_tokens, self.block_size) > len(self.tables[seq]):
            raise ValueError("call prepare_append before commit")
        self.lengths[seq] += n_tokens

    def append(self, seq: Hashable, n_tokens: int = 1) -> list[tuple[int, int]]:
        """Bookkeeping of ``n_tokens`` new tokens (prepare + commit); returns the copy-on-write copies."""
        copies = self.prepare_append(seq, n_tokens)
        self.commit(seq, n_tokens)
        return copies

    def truncate(self, seq: Hashable, length: int) -> None:
        """Forget positions >= ``length`` of ``seq`` (blocks no longer needed are released)."""
        if not 0 <= length <= self.lengths[seq]:
            raise ValueError(f"cannot truncate sequence {seq!r} of {self.lengths[seq]} tokens to {length}")
        keep = blocks_needed(length, self.block_size)
        table = self.tables[seq]
        while len(table) > keep:
            self._release(table.pop())
        self.lengths[seq] = length

    def free(self, seq: Hashable) -> None:
        """The sequence is finished: release its blocks (shared ones stay with their other holders)."""
        for block in self.tables.pop(seq):
            self._release(block)
        del self.lengths[seq]

    def slots(self, seq: Hashable, start: int, end: int) -> tuple[list[int], list[int]]:
        """(physical block, slot) of positions start .. end - 1 of ``seq``."""
        table = self.tables[seq]
        positions = range(start, end)
        return [table[p // self.block_size] for p in positions], [p % self.block_size for p in positions]


class PagedKVCache:
    """A pool of ``num_blocks`` blocks of ``block_size`` token slots, each holding K and V of every layer.

    ``keys`` / ``values``: (n_layers, num_blocks, n_kv_heads, block_size, head_dim). Sequences are managed by
    :attr:`manager` (a :class:`BlockManager`); this class moves the tensors: writes, copy-on-write copies, gathers.
    """

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, *, num_blocks: int, block_size: int = 16,
                 dtype=torch.float32, device="cpu"):
        self.manager = BlockManager(num_blocks, block_size)
        shape = (n_layers, num_blocks, n_kv_heads, block_size, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.n_layers, self.n_kv_heads, self.head_dim = n_layers, n_kv_heads, head_dim

    @classmethod
    def for_runner(cls, runner: LlamaRunner, *, num_blocks: int, block_size: int = 16) -> PagedKVCache:
        return cls(runner.n_layers, runner.n_kv_heads, runner.head_dim, num_blocks=num_blocks, block_size=block_size,
                   dtype=runner.dtype, device=runner.device)

    @property
    def block_size(self) -> int:
        return self.manager.block_size

    @property
    def nbytes(self) -> int:
        """Bytes of the whole pool (allocated up front, like a GPU server's KV memory)."""
        return self.keys.nelement() * self.keys.element_size() * 2

    @property
    def bytes_per_block(self) -> int:
        return self.nbytes // self.manager.num_blocks

    # ------------------------------------------------------------------ sequences (delegated)
    def add_sequence(self, seq: Hashable) -> None:
        self.manager.add_sequence(seq)

    def fork(self, parent: Hashable, child: Hashable) -> None:
        self.manager.fork(parent, child)

    def free(self, seq: Hashable) -> None:
        self.manager.free(seq)

    def truncate(self, seq: Hashable, length: int) -> None:
        self.manager.truncate(seq, length)

    def length(self, seq: Hashable) -> int:
        return self.manager.lengths[seq]

    def block_table(self, seq: Hashable) -> list[int]:
        return list(self.manager.tables[seq])

    # ------------------------------------------------------------------ tensors
    def _copy_blocks(self, copies: Sequence[tuple[int, int]]) -> None:
        for source, destination in copies:
            self.keys[:, destination] = self.keys[:, source]
            self.values[:, destination] = self.values[:, source]

    def reserve(self, seq: Hashable, n_tokens: int) -> None:
        """Make the next ``n_tokens`` slots of ``seq`` writable (allocation + copy-on-write), without committing."""
        self._copy_blocks(self.manager.prepare_append(seq, n_tokens))

    def write(self, seq: Hashable, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store keys/values (n_kv_heads, T, head_dim) of one layer at positions start .. start + T - 1 (the slots
        must have been reserved)."""
        blocks, slots = self.manager.slots(seq, start, start + k.shape[-2])
        blocks_t = torch.tensor(blocks, device=self.keys.device)
        slots_t = torch.tensor(slots, device=self.keys.device)
        # advanced indexing on dims 1 and 3 puts the token dimension first: (T, n_kv_heads, head_dim)
        self.keys[layer, blocks_t, :, slots_t] = k.transpose(0, 1).to(self.keys.dtype)
        self.values[layer, blocks_t, :, slots_t] = v.transpose(0, 1).to(self.values.dtype)

    def append(self, seq: Hashable, k: torch.Tensor, v: torch.Tensor) -> None:
        """Append T tokens to ``seq``: k, v of shape (n_layers, n_kv_heads, T, head_dim)."""
        n = k.shape[-2]
        start = self.length(seq)
        self.reserve(seq, n)
        for layer in range(self.n_layers):
            self.write(seq, layer, start, k[layer], v[layer])
        self.manager.commit(seq, n)

    def gather(self, seq: Hashable, layer: int | None = None, length: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The contiguous keys and values of ``seq`` read through its block table: (n_kv_heads, length, head_dim)
        for one layer, (n_layers, n_kv_heads, length, head_dim) for ``layer=None``."""
        length = self.length(seq) if length is None else length
        table = torch.tensor(self.manager.tables[seq][: blocks_needed(length, self.block_size)],
                             dtype=torch.long, device=self.keys.device)
        out = []
        for pool in (self.keys, self.values):
            part = pool[:, table] if layer is None else pool[layer, table]  # (..., blocks, G, bs, d)
            part = part.transpose(-4, -3).flatten(-3, -2)                    # (..., G, blocks * bs, d)
            out.append(part[..., :length, :])
        return out[0], out[1]


def paged_attention(q: torch.Tensor, cache: PagedKVCache, seq: Hashable, layer: int, causal: bool = True
                    ) -> torch.Tensor:
    """Attention of queries q (H, L, d) over the keys/values of ``seq`` read block by block from the pool.

    The queries are the last L positions of the sequence (causal mask aligned bottom-right). Each step reads one
    physical block of the block table and folds it into a running max m, sum l and output o (online softmax):
    m' = max(m, rowmax(S_j)), l = e^(m - m') l + rowsum(e^(S_j - m')), o = e^(m - m') o + e^(S_j - m') V_j.
    Grouped-query attention by head indexing: query head h reads KV head h // (H / G), nothing is copied.
    """
    heads, queries, dim = q.shape
    manager = cache.manager
    length, bs = manager.lengths[seq], manager.block_size
    groups = cache.n_kv_heads
    if heads % groups:
        raise ValueError(f"{heads} query heads cannot share {groups} KV heads evenly")
    qg = q.reshape(groups, heads // groups, queries, dim).float() / math.sqrt(dim)
    query_pos = torch.arange(length - queries, length, device=q.device)
    m = torch.full((groups, heads // groups, queries, 1), float("-inf"), device=q.device)
    total = torch.zeros_like(m)
    o = torch.zeros(groups, heads // groups, queries, dim, device=q.device)
    for j, block in enumerate(manager.tables[seq]):
        valid = min(bs, length - j * bs)
        k = cache.keys[layer, block, :, :valid].float()[:, None]    # (G, 1, valid, d)
        v = cache.values[layer, block, :, :valid].float()[:, None]
        scores = qg @ k.transpose(-1, -2)                             # (G, H/G, L, valid)
        if causal:
            key_pos = torch.arange(j * bs, j * bs + valid, device=q.device)
            scores = scores.masked_fill(key_pos[None, :] > query_pos[:, None], float("-inf"))
        m_new = torch.maximum(m, scores.amax(-1, keepdim=True))
        # a query row with every key of this block masked keeps m_new = -inf only if it saw no key before; the
        # first block always holds position 0, which every query sees, so m_new is finite from block 0 on
        scale = torch.exp(m - m_new)
        p = torch.exp(scores - m_new)
        total = scale * total + p.sum(-1, keepdim=True)
        o = scale * o + p @ v
        m = m_new
    return (o / total).reshape(heads, queries, dim).to(q.dtype)


class PagedSequence:
    """One sequence of a :class:`PagedKVCache` seen through the interface of ``KVCache`` (``store``, ``length``),
    so that ``LlamaRunner(ids, cache=PagedSequence(paged, seq))`` writes and reads its K/V through the block
    table. Batch 1; new tokens must follow the sequence's current end."""

    def __init__(self, cache: PagedKVCache, seq: Hashable):
        self.cache, self.seq = cache, seq
        if seq not in cache.manager.tables:
            cache.add_sequence(seq)
        self._pending: tuple[int, int] | None = None

    @property
    def length(self) -> int:
        return self.cache.length(self.seq)

    @length.setter
    def length(self, value: int) -> None:  # the runner sets start + T after its last layer
        if self._pending is None or value != self._pending[1]:
            raise ValueError(f"unexpected new length {value}: tokens must be fed through store first")
        self.cache.manager.commit(self.seq, value - self._pending[0])
        self._pending = None

    def store(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write one layer's k, v (1, G, T, d) at positions start..; return that layer's K/V (1, G, start + T, d)."""
        if k.shape[0] != 1:
            raise ValueError("PagedSequence holds one sequence: feed batch 1")
        end = start + k.shape[-2]
        if layer == 0:
            if start != self.length:
                raise ValueError(f"sequence {self.seq!r} holds {self.length} tokens; new tokens must start there, "
                                 f"not at {start} (truncate first to roll back)")
            self.cache.reserve(self.seq, end - start)
            self._pending = (start, end)
        self.cache.write(self.seq, layer, start, k[0], v[0])
        keys, values = self.cache.gather(self.seq, layer, length=end)
        return keys[None], values[None]


def paged_greedy(runner: LlamaRunner, cache: PagedKVCache, seq: Hashable, new_ids: Sequence[int],
                 max_new_tokens: int, temperature: float = 0.0, seed: int = 0) -> list[int]:
    """Feed ``new_ids`` (the tokens of ``seq`` not yet in the cache), then decode ``max_new_tokens`` tokens,
    every step reading and writing K/V through the block table of ``seq``."""
    view = PagedSequence(cache, seq)
    generator = torch.Generator().manual_seed(seed) if temperature > 0 else None
    feed = torch.tensor([list(new_ids)], device=runner.device)
    tokens: list[int] = []
    for _ in range(max_new_tokens):
        logits = runner(feed, view)[0, -1]
        token = next_token(logits, temperature, generator)
        tokens.append(token)
        feed = torch.tensor([[token]], device=runner.device)
    return tokens


# ---------------------------------------------------------------------------- serving simulation

@dataclass
class Requests:
    """Prompt and output lengths of a stream of requests (tokens)."""

    prompt: np.ndarray
    output: np.ndarray

    def __len__(self) -> int:
        return len(self.prompt)

    @property
    def total(self) -> np.ndarray:
        return self.prompt + self.output


def random_requests(n: int, max_prompt: int, max_output: int, seed: int = 0) -> Requests:
    """``n`` requests with prompt lengths uniform on 1..max_prompt and output lengths uniform on 1..max_output."""
    rng = np.random.default_rng(seed)
    return Requests(rng.integers(1, max_prompt + 1, n), rng.integers(1, max_output + 1, n))


def simulate_serving(requests: Requests, *, pool_tokens: int, max_len: int, block_size: int | None = None,
                     trace_every: int = 1) -> dict:
    """Serve ``requests`` first come first served from a KV memory of ``pool_tokens`` token slots.

    Every step each running sequence generates one token (continuous batching: finished sequences leave and
    waiting ones join between steps; a prompt is prefilled in the step its sequence joins).

    * ``block_size=None``: **contiguous reservation**. A sequence joins only if ``max_len`` free slots remain
      and holds all of them until it finishes (the server cannot know its final length).
    * ``block_size=b``: **paged**. The pool has pool_tokens // b blocks; a sequence joins when its prompt and
      first new token fit with one spare block per running sequence left over, and takes a block each time it
      crosses a block boundary. If no block is free, the
      most recently admitted sequence is preempted (its blocks freed; it waits at the front of the queue and is
      recomputed when it rejoins, as in vLLM).

    Returns per-step traces (every ``trace_every``-th step) of reserved and real tokens and of the batch size,
    and the totals: utilisation (sum of real tokens / sum of reserved slots over all steps), tokens generated
    per step (the mean batch; a preempted sequence's recomputation is not charged), steps, the largest waste of
    one sequence (reserved slots - its tokens), preemptions.
    """
    n = len(requests)
    if (requests.total > max_len).any():
        raise ValueError(f"a request is longer than max_len = {max_len}")
    paged = block_size is not None
    capacity = pool_tokens // block_size if paged else pool_tokens
    unit = block_size if paged else 1
    need_first = (lambda tokens: blocks_needed(tokens, block_size)) if paged else (lambda tokens: max_len)
    if need_first(max_len) > capacity:
        raise ValueError("the pool cannot hold even one sequence of max_len tokens")
    queue = list(range(n))
    generated = np.zeros(n, dtype=np.int64)
    running: list[int] = []
    held = np.zeros(n, dtype=np.int64)  # blocks (paged) or slots (contiguous) held by each sequence
    free = capacity
    steps = preemptions = 0
    reserved_sum = real_sum = 0
    max_waste = 0
    trace = {"step": [], "reserved": [], "real": [], "batch": []}
    prompt, output = requests.prompt, requests.output
    while queue or running:
        # admit waiting requests in order while the first one fits
        while queue:
            r = queue[0]
            need = need_first(prompt[r] + generated[r] + 1)
            # paged: keep one spare block per running sequence, so that the next step rarely has to preempt
            if need + (len(running) if paged else 0) > free:
                break
            queue.pop(0)
            running.append(r)
            held[r] = need
            free -= need
        if not running:
            raise RuntimeError("a request does not fit into an empty pool")
        # one decode step: every running sequence writes one more token
        idx = np.array(running)
        length = prompt[idx] + generated[idx] + 1          # tokens held after this step's write
        if paged:
            wanted = -(-length // block_size)
            extra = wanted - held[idx]
            while extra.sum() > free:                      # preempt the newest sequence until the step fits
                victim = running.pop()
                free += held[victim]
                held[victim] = 0
                queue.insert(0, victim)
                preemptions += 1
                idx, length, wanted, extra = idx[:-1], length[:-1], wanted[:-1], extra[:-1]
            held[idx] = wanted
            free -= int(extra.sum())
        reserved = int(held[idx].sum()) * unit
        real = int(length.sum())
        reserved_sum += reserved
        real_sum += real
        max_waste = max(max_waste, int((held[idx] * unit - length).max()))
        if steps % trace_every == 0:
            trace["step"].append(steps)
            trace["reserved"].append(reserved)
            trace["real"].append(real)
            trace["batch"].append(len(idx))
        steps += 1
        generated[idx] += 1
        done = [r for r in idx.tolist() if generated[r] >= output[r]]
        for r in done:
            running.remove(r)
            free += held[r]
            held[r] = 0
    return {"utilisation": real_sum / reserved_sum, "tokens_per_step": requests.output.sum() / steps, "steps": steps,
            "max_waste": max_waste, "preemptions": preemptions, "capacity_tokens": capacity * unit,
            "trace": {k: np.asarray(v) for k, v in trace.items()}}


def prefix_sharing(n_sequences: int, system_tokens: int, user_tokens: Sequence[int], block_size: int) -> dict:
    """Blocks for ``n_sequences`` prompts that start with the same ``system_tokens`` tokens, without and with
    sharing, counted by a :class:`BlockManager`.

    With sharing, the system prompt is written once and every other sequence is a :meth:`~BlockManager.fork`
    of it; then each appends its own ``user_tokens[i]`` tokens (copy-on-write splits the shared last block when
    the system prompt does not end on a block boundary).
    """
    if len(user_tokens) != n_sequences:
        raise ValueError("give one user-prompt length per sequence")
    total = [system_tokens + u for u in user_tokens]
    capacity = sum(blocks_needed(t, block_size) for t in total) + 1
    alone = BlockManager(capacity, block_size)
    for i, t in enumerate(total):
        alone.add_sequence(i)
        alone.append(i, t)
    shared = BlockManager(capacity, block_size)
    shared.add_sequence(0)
    shared.append(0, system_tokens)
    for i in range(1, n_sequences):
        shared.fork(0, i)
    for i, u in enumerate(user_tokens):
        shared.append(i, u)
    shared.check()
    return {"blocks_unshared": alone.used_blocks, "blocks_shared": shared.used_blocks,
            "saving": 1 - shared.used_blocks / alone.used_blocks, "copy_on_write": shared.copies,
            "shared_full_blocks": system_tokens // block_size}
