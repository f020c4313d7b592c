"""The cross-modal VL-MIA pipeline, the same for any causal VLM (``run_with_img.py`` of LIONS-EPFL/VL-MIA@859bc99).

1. **Generation**: the model describes each image greedily (``do_sample=False``, ``max_new_tokens``).
2. **Inference**: one forward pass on [prompt prefix][image embeddings][instruction][description]; the sequence
   is built exactly like the reference: the prompt is tokenised as chunks split at ``<image>`` (each with BOS),
   the first chunk is kept whole, then N image positions, then each later chunk without its BOS.
3. **Slicing** (:func:`lionsnb.vlmia.slicing.slices`) into ``img``, ``inst``, ``desp``, ``inst_desp``.
4. **Scoring** (:func:`lionsnb.vlmia.metrics.batch_scores`): every metric of the reference, vectorised over the
   batch, the positions and the vocabulary; ``img`` uses the pseudo-targets (``ids=None``).

A model enters through a small adapter (:class:`TinyVLMAdapter` for the package's tiny VLM,
:class:`HFLlavaAdapter` for ``LlavaForConditionalGeneration``, e.g. ``llava-hf/llava-1.5-7b-hf``); the pipeline
code itself does not change between them. Timings of the forward pass and of the scoring are kept so that the
scoring overhead can be reported as a ratio.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from lionsnb.vlmia.data import WordTokenizer
from lionsnb.vlmia.metrics import aggregate, chunked_quantities
from lionsnb.vlmia.slicing import slices

__all__ = ["VLMAdapter", "TinyVLMAdapter", "HFLlavaAdapter", "PipelineResult", "build_sequence", "describe",
           "run_pipeline", "score_texts", "LLAVA_TEMPLATE", "LLAVA_INSTRUCTION", "LLAVA_HUB_ID", "TINY_TEMPLATE",
           "load_llava", "sequence_traces", "sequence_quantities", "slice_rows", "tiny_random_llava", "aug_kl_scores"]

LLAVA_HUB_ID = "llava-hf/llava-1.5-7b-hf"
#: LLaVA-1.5's conversation template (vicuna_v1 with its system prompt); ``{description}`` is empty while generating
LLAVA_TEMPLATE = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives "
                  "helpful, detailed, and polite answers to the human's questions. USER: <image>\n{instruction} "
                  "ASSISTANT: {description}")
#: the concise-description instruction used for LLaVA
LLAVA_INSTRUCTION = "Describe this image concisely."
TINY_TEMPLATE = "USER: <image> {instruction} ASSISTANT: {description}"


class VLMAdapter(Protocol):
    """What the pipeline needs from a VLM."""

    n_image: int               # number of image embeddings N in the sequence
    image_token_id: int        # the id marking image positions in input_ids
    pad_token_id: int
    template: str              # a prompt with one "<image>", "{instruction}" and "{description}"

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def generate(self, images: Any, input_ids: torch.Tensor, max_new_tokens: int, min_new_tokens: int = 0
                 ) -> list[list[int]]: ...

    def logits(self, images: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor: ...


def build_sequence(adapter: VLMAdapter, instruction: str, description: str) -> tuple[list[int], list[int], int]:
    """``(input_ids, chunk_lengths, desc_len)`` of the reference's inference sequence.

    The prompt (template filled with instruction and description, trailing whitespace stripped) is split at
    ``<image>``; each chunk is tokenised with BOS; the sequence is chunk 0, N image ids, then the last chunk
    without its BOS. ``desc_len`` = number of tokens of the description tokenised alone (no special tokens).
    """
    parts = adapter.template.split("<image>")
    if len(parts) != 2:
        raise ValueError(f"the template must contain exactly one <image>, got {len(parts) - 1}: {adapter.template!r}")
    # fill the chunks after splitting, so that a description containing "<image>" cannot move the split
    parts = [p.format(instruction=instruction, description=description) for p in parts]
    parts[-1] = parts[-1].rstrip()
    chunks = [adapter.encode(p) for p in parts]
    ids = chunks[0] + [adapter.image_token_id] * adapter.n_image + chunks[1][1:]
    desc_len = len(adapter.encode(description, add_special_tokens=False)) if description else 0
    return ids, [len(c) for c in chunks], desc_len


def _pad(rows: Sequence[Sequence[int]], pad: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if left:
            ids[i, width - len(r):], mask[i, width - len(r):] = torch.tensor(r), 1
        else:
            ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
    return ids, mask


def _take(images: Any, idx: Sequence[int]) -> Any:
    if isinstance(images, torch.Tensor):
        return images[list(idx)]
    return [images[i] for i in idx]


def describe(adapter: VLMAdapter, images: Any, instruction: str, max_new_tokens: int = 32,
             batch_size: int = 64, progress: Callable | None = None, min_new_tokens: int = 0) -> list[str]:
    """Greedy descriptions (the generation stage): decoded text without special tokens, stripped.

    ``min_new_tokens`` > 0 forbids EOS for the first tokens (the reference uses 0; an untrained model may
    otherwise stop at once and leave an empty description slice)."""
    ids, _, _ = build_sequence(adapter, instruction, "")
    n = len(images)
    out: list[str] = []
    starts = range(0, n, batch_size)
    for s in (progress(starts, desc="describing") if progress else starts):
        idx = range(s, min(n, s + batch_size))
        prompt = torch.tensor([ids] * len(idx))
        for new in adapter.generate(_take(images, idx), prompt, max_new_tokens, min_new_tokens):
            out.append(adapter.decode(new).strip())
    return out


@dataclass
class PipelineResult:
    """Scores per slice (``scores[slice][key]`` = array over examples), descriptions and timings."""

    scores: dict[str, dict[str, np.ndarray]]
    descriptions: list[str]
    slices: list[dict[str, slice]]
    generate_seconds: float = 0.0
    forward_seconds: float = 0.0
    scoring_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def scoring_ratio(self) -> float:
        """Scoring time / forward-pass time (the cost of the metrics relative to producing the logits)."""
        return self.scoring_seconds / max(self.forward_seconds, 1e-12)


def sequence_quantities(logits: torch.Tensor, ids: torch.Tensor, image_slices: Sequence[slice | None], *,
                        extras: bool = True, chunk_elements: int | None = None) -> dict[str, torch.Tensor]:
    """Per-position quantities of whole sequences, computed once for every slice: ``[B, S - 1]``.

    Row t is scored against ``ids[t + 1]``, except the rows that predict an image position (rows
    ``[c0 - 1, c0 + N - 1)``), which use their own argmax: the reference's pseudo-targets (image position p gets
    argmax(logits[p - 1])). Each slice is then a contiguous range of these rows (:func:`slice_rows`).
    """
    targets = ids[:, 1:].clone()
    for b, img in enumerate(image_slices):
        if img is not None and img.stop > img.start:
            targets[b, img.start - 1:img.stop - 1] = -1
    return chunked_quantities(logits[:, :-1], targets, extras=extras, chunk_elements=chunk_elements)


def slice_rows(bound: slice, compat: str) -> slice:
    """The rows of the sequence quantities that score a slice: ``[start, stop - 1)`` in the reference's alignment
    (row i against token i + 1 inside the slice), ``[start - 1, stop - 1)`` in the standard causal alignment."""
    if compat == "vlmia":
        return slice(bound.start, max(bound.start, bound.stop - 1))
    return slice(bound.start - 1, bound.stop - 1)


def _gather_rows(q: dict[str, torch.Tensor], rows: Sequence[slice]) -> tuple[dict[str, torch.Tensor], list[int]]:
    """One contiguous range of positions per example, right-padded: ``{name: [B, Lmax]}`` and the lengths."""
    lengths = [r.stop - r.start for r in rows]
    width = max(1, max(lengths))
    n = next(iter(q.values())).shape[1]
    pos = (torch.tensor([r.start for r in rows]).unsqueeze(1) + torch.arange(width).unsqueeze(0)).clamp(0, n - 1)
    return {k: v.gather(1, pos) for k, v in q.items()}, lengths


def run_pipeline(adapter: VLMAdapter, images: Any, instruction: str, *, descriptions: Sequence[str] | None = None,
                 max_new_tokens: int = 32, min_new_tokens: int = 0, batch_size: int = 64, compat: str = "vlmia",
                 extras: bool = True, slice_names: Sequence[str] | None = None,
                 progress: Callable | None = None) -> PipelineResult:
    """Describe (unless ``descriptions`` are given), run one forward pass per batch, slice and score.

    Returns every score of every slice for every image, plus the descriptions and the time spent generating,
    in the forward passes and in the scoring. ``compat="standard"`` scores each slice with the causal alignment
    (each slice token against the row before it) instead of the reference's in-slice alignment.
    """
    if compat not in ("vlmia", "standard"):
        raise ValueError(f"compat={compat!r}: use 'vlmia' (the reference) or 'standard' (causal alignment)")
    t0 = time.perf_counter()
    if descriptions is None:
        descriptions = describe(adapter, images, instruction, max_new_tokens, batch_size, progress, min_new_tokens)
    gen_s = time.perf_counter() - t0
    seqs = [build_sequence(adapter, instruction, d) for d in descriptions]
    bounds = [slices(c, adapter.n_image, ld) for _, c, ld in seqs]
    names = list(slice_names or bounds[0].keys())
    per_slice: dict[str, list[dict[str, np.ndarray]]] = {k: [] for k in names}
    fwd_s = score_s = 0.0
    n = len(seqs)
    starts = range(0, n, batch_size)
    for s in (progress(starts, desc="scoring") if progress else starts):
        idx = list(range(s, min(n, s + batch_size)))
        ids, mask = _pad([seqs[i][0] for i in idx], adapter.pad_token_id)
        t1 = time.perf_counter()
        with torch.no_grad():
            logits = adapter.logits(_take(images, idx), ids, mask)
        if logits.device.type == "cuda":
            torch.cuda.synchronize()
        t2 = time.perf_counter()
        fwd_s += t2 - t1
        q = sequence_quantities(logits, ids.to(logits.device), [bounds[i].get("img") for i in idx], extras=extras)
        for name in names:
            rows, lengths = _gather_rows(q, [slice_rows(bounds[i][name], compat) for i in idx])
            per_slice[name].append(aggregate(rows, lengths, extras=extras))
        score_s += time.perf_counter() - t2
    out = {name: {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} for name, parts in per_slice.items()}
    return PipelineResult(out, list(descriptions), bounds, gen_s, fwd_s, score_s)


def aug_kl_scores(adapter: VLMAdapter, images: torch.Tensor, instruction: str, descriptions: Sequence[str], *,
                  seed: int = 0, batch_size: int = 64, slice_names: Sequence[str] | None = None
                  ) -> dict[str, np.ndarray]:
    """Aug-KL per slice (``metric_util.py#L64-L76``): minus the mean over the four augmented views
    (:func:`lionsnb.vlmia.augment.augment_images`) of KL(p_orig || p_aug), summed over the rows of the slice and
    the vocabulary; the inference sequence (and its description) is the same for the original and the views.
    Lower = member (a member's prediction moves more when its image is perturbed). Float image tensors only."""
    from lionsnb.vlmia.augment import augment_images

    if not isinstance(images, torch.Tensor):
        raise TypeError("aug_kl_scores augments float image tensors [B, 3, H, W]; convert PIL images first")
    seqs = [build_sequence(adapter, instruction, d) for d in descriptions]
    bounds = [slices(c, adapter.n_image, ld) for _, c, ld in seqs]
    names = list(slice_names or bounds[0].keys())
    out: dict[str, list[float]] = {k: [] for k in names}
    for s in range(0, len(seqs), batch_size):
        idx = list(range(s, min(len(seqs), s + batch_size)))
        ids, mask = _pad([seqs[i][0] for i in idx], adapter.pad_token_id)
        batch = images[idx]
        with torch.no_grad():
            lp0 = torch.log_softmax(adapter.logits(batch, ids, mask).double(), -1)
            p0 = lp0.exp()
            kls = [(p0 * (lp0 - torch.log_softmax(adapter.logits(view, ids, mask).double(), -1))).sum(-1).cpu()
                   for view in augment_images(batch, seed + s)]
        kl = torch.stack(kls)                                                  # [views, B, S]
        for j, i in enumerate(idx):
            for name in names:
                b = bounds[i][name]
                out[name].append(float(-kl[:, j, b.start:b.stop].sum(-1).mean()))
    return {k: np.asarray(v) for k, v in out.items()}


def score_texts(adapter: VLMAdapter, texts: Sequence[str], image: Any, *, instruction: str = "",
                batch_size: int = 64, compat: str = "vlmia") -> PipelineResult:
    """The text MIA of ``run_with_text.py``: a fixed (black) image, an empty instruction, the text under test as the
    assistant's answer. Slice ``inst`` = ``inst_desp`` = everything after the image (template tokens included);
    ``desp`` = the text alone."""
    images = [image] * len(texts) if not isinstance(image, torch.Tensor) else image.expand(len(texts), -1, -1, -1)
    res = run_pipeline(adapter, images, instruction, descriptions=list(texts), batch_size=batch_size,
                       compat=compat, slice_names=("inst", "desp", "inst_desp"))
    res.scores["inst"] = res.scores.pop("inst_desp")
    return res


def sequence_traces(adapter: VLMAdapter, image: Any, instruction: str, description: str) -> dict[str, Any]:
    """Per-position quantities over one whole inference sequence, for plots: ``renyi_*``, ``target_logprob``
    (row t against token t+1; pseudo-targets on image rows), the ids, the tokens and the slices."""
    ids, chunks, ld = build_sequence(adapter, instruction, description)
    bounds = slices(chunks, adapter.n_image, ld)
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = adapter.logits(_take(image, [0]) if isinstance(image, torch.Tensor) else [image], x,
                                torch.ones_like(x))
    q = sequence_quantities(logits, x.to(logits.device), [bounds.get("img")])
    q = {k: v[0] for k, v in q.items()}
    logits = logits[0]
    toks = [_token_text(adapter, i) for i in ids]
    return {"quantities": {k: v.numpy() for k, v in q.items()}, "ids": ids, "tokens": toks, "slices": bounds,
            "logits": logits}


def _token_text(adapter: VLMAdapter, token_id: int) -> str:
    """A readable form of one token id, specials included (``<img>`` for image positions)."""
    if token_id == adapter.image_token_id:
        return "<img>"
    tok = getattr(adapter, "tokenizer", None)
    if hasattr(tok, "convert_ids_to_tokens"):
        return str(tok.convert_ids_to_tokens(int(token_id)))
    if hasattr(tok, "vocab"):
        return str(tok.vocab[int(token_id)])
    return adapter.decode([token_id]) or f"<{token_id}>"


# --------------------------------------------------------------------------- adapters

class TinyVLMAdapter:
    """The package's tiny VLM (:class:`lionsnb.vlmia.model.TinyVLM`) behind the adapter interface."""

    template = TINY_TEMPLATE

    def __init__(self, model: Any, device: torch.device | str = "cpu"):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.tokenizer: WordTokenizer = model.tokenizer
        self.n_image = model.n_image
        self.image_token_id = self.tokenizer.image_token_id
        self.pad_token_id = self.tokenizer.pad_token_id

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    def _split(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        where = (input_ids[0] == self.image_token_id).nonzero()
        c0 = int(where[0])
        return input_ids[:, :c0].to(self.device), input_ids[:, c0 + self.n_image:].to(self.device)

    def generate(self, images: torch.Tensor, input_ids: torch.Tensor, max_new_tokens: int, min_new_tokens: int = 0
                 ) -> list[list[int]]:
        prefix, suffix = self._split(input_ids)
        return self.model.greedy(images.to(self.device), prefix[0], suffix, max_new_tokens, min_new_tokens)

    def logits(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        prefix, suffix = self._split(input_ids)  # right padding: causal attention never reads the pads
        return self.model(images.to(self.device), prefix[0], suffix)


class HFLlavaAdapter:
    """A transformers ``LlavaForConditionalGeneration`` (e.g. ``llava-hf/llava-1.5-7b-hf``) behind the adapter.

    ``tokenizer`` and ``image_processor`` are the processor's parts. The sequence is built by the pipeline (chunks
    with BOS, N image tokens), not by the processor's text handling, so the slices follow the reference exactly.
    """

    template = LLAVA_TEMPLATE

    def __init__(self, model: Any, tokenizer: Any, image_processor: Any, *, n_image: int | None = None,
                 template: str | None = None, device: torch.device | str | None = None):
        self.model, self.tokenizer, self.image_processor = model.eval(), tokenizer, image_processor
        cfg = model.config
        self.image_token_id = int(getattr(cfg, "image_token_id", None) or cfg.image_token_index)
        if n_image is None:
            vc = cfg.vision_config
            n_image = (vc.image_size // vc.patch_size) ** 2
            if getattr(cfg, "vision_feature_select_strategy", "default") == "full":
                n_image += 1
        self.n_image = int(n_image)
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        if template is not None:
            self.template = template
        self.device = torch.device(device) if device is not None else next(model.parameters()).device

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def pixel_values(self, images: Any) -> torch.Tensor:
        if isinstance(images, torch.Tensor):  # float images in [0, 1], [B, 3, H, W]
            arrays = [im.permute(1, 2, 0).cpu().numpy() for im in images]
            out = self.image_processor(arrays, return_tensors="pt", do_rescale=False)
        else:
            out = self.image_processor([im.convert("RGB") if hasattr(im, "convert") else im for im in images],
                                       return_tensors="pt")
        return out["pixel_values"].to(self.device, dtype=next(self.model.parameters()).dtype)

    def generate(self, images: Any, input_ids: torch.Tensor, max_new_tokens: int, min_new_tokens: int = 0
                 ) -> list[list[int]]:
        ids = input_ids.to(self.device)
        out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                  pixel_values=self.pixel_values(images), do_sample=False,
                                  max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                                  pad_token_id=self.pad_token_id)
        eos = self.tokenizer.eos_token_id
        rows = out[:, ids.shape[1]:].tolist()
        return [r[:r.index(eos)] if eos in r else r for r in rows]

    def logits(self, images: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
                         pixel_values=self.pixel_values(images))
        return out.logits


def load_llava(model_id: str = LLAVA_HUB_ID, *, dtype: Any = None, device: str | None = None) -> HFLlavaAdapter:
    """``HFLlavaAdapter`` for a hub LLaVA (network and a GPU for the 7B model); a clear error offline."""
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - transformers is a dependency
        raise ImportError("loading LLaVA needs transformers: pip install transformers") from err
    dtype = dtype or (torch.float16 if torch.cuda.is_available() else torch.float32)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        processor = transformers.AutoProcessor.from_pretrained(model_id)
        model = transformers.LlavaForConditionalGeneration.from_pretrained(model_id, dtype=dtype).to(device)
    except OSError as err:
        raise OSError(f"could not load {model_id!r} from the Hugging Face hub (no network, or not cached). The "
                      "`full` profile needs network access and a GPU with ~16 GB; offline profiles use the "
                      "package's tiny VLM instead.") from err
    return HFLlavaAdapter(model, processor.tokenizer, processor.image_processor, device=device)


def tiny_random_llava(seed: int = 0, n_words: int = 40) -> HFLlavaAdapter:
    """A randomly initialised ``LlavaForConditionalGeneration`` built in memory (no download): a one-layer CLIP
    vision tower on 28-px images (14-px patches: 4 image embeddings), a one-layer Llama decoder, a word-level
    tokenizer (``w0`` ... and ``Say.``) and a CLIP image processor. It runs the transformers code path of the
    pipeline offline; its scores carry no membership signal (nothing was trained)."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = ["<pad>", "<s>", "</s>", "<image>", "USER:", "ASSISTANT:", "Say."] + [f"w{i}" for i in range(n_words)]
    vocab = {w: i for i, w in enumerate(words)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>",
                                                     pad_token="<pad>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>", "USER:", "ASSISTANT:"]})
    cfg = transformers.LlavaConfig(
        vision_config=transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                    num_attention_heads=2, image_size=28, patch_size=14),
        text_config=transformers.LlamaConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                                             max_position_embeddings=128, pad_token_id=0),
        image_token_index=vocab["<image>"], vision_feature_layer=-1)
    torch.manual_seed(seed)
    model = transformers.LlavaForConditionalGeneration(cfg).eval()
    processor_cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    processor = processor_cls(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    return HFLlavaAdapter(model, tokenizer, processor, template="USER: <image> {instruction} ASSISTANT: {description}")
