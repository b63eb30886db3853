"""Trained classifiers and their checkpoint format: safetensors weights + `classifier.json`.

One folder per classifier, any family, never pickle:

- `classifier.json`: family, label codes and names, per-label thresholds, precision, attention,
  trust_remote_code, the training mix (arm, regime, ratio, ...), metrics, provenance and the
  family's own settings (`family_config`).
- `finetune`: `model/`: a Hugging Face folder (`save_pretrained`, safetensors) with its tokenizer.
- `frozen_head`: `head.safetensors` (the linear or MLP head); the frozen encoder is named by its
  model source, token limit, backend and quantization in `family_config.encoder` (a checkpoint
  without the last two: `torch`, `none`, what it was trained with) and loaded with
  `tasks.embeddings.load_encoder`.
- `tfidf_linear`: `tfidf.safetensors` (`idf`, `coef`, `intercept`) + `vocabulary.json` (terms
  in column order); the vectorizer's settings are in `family_config`.
- `setfit`: `body/`: the contrastively fine-tuned body as a sentence-transformers folder
  (safetensors) and `head.safetensors` (`coef`, `intercept` of the one-vs-rest logistic head);
  see `tasks.setfit_family`.
- `ensemble`: `members/<name>/`, one classifier folder per member; the ensemble's probability
  is the members' mean and its thresholds (tuned on that mean) are in its own classifier.json.

`load_classifier(path)` returns a `Classifier` with `predict_proba`, `predict`, `embed`. Reading
and writing a family's weights goes through its class in `tasks.trials.families` (`load`,
`save`), so a new family brings its own checkpoint code; the ensemble, which wraps members of
any family, is handled here.
"""

from __future__ import annotations

import json
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

from config.trials import needs_cuda
from tasks.files import replace_dir

FORMAT_VERSION = 1
CLASSIFIER_JSON = "classifier.json"
ENSEMBLE = "ensemble"


def checkpoint_families() -> tuple[str, ...]:
    """Every `family` a classifier.json may name: the registered families and the ensemble."""
    from tasks.trials.families import kinds

    return (*kinds(), ENSEMBLE)


class Classifier(ABC):
    """A trained multi-label classifier: probabilities, thresholded labels and embeddings."""

    family: str = ""

    def __init__(
        self,
        labels: list[str],
        names: list[str],
        thresholds: np.ndarray | list[float] | float = 0.5,
        meta: dict[str, Any] | None = None,
    ):
        if len(names) != len(labels):
            raise ValueError(f"names has {len(names)} entries, labels has {len(labels)}")
        self.labels = list(labels)
        self.names = list(names)
        self.thresholds = _as_thresholds(thresholds, len(labels))
        self.meta: dict[str, Any] = dict(meta or {})

    @abstractmethod
    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """Per-label probabilities, (n, L) float32."""

    @abstractmethod
    def embed(self, texts: list[str]) -> np.ndarray:
        """The classifier's document embeddings, (n, d) float32 (used by the retrieval proxy)."""

    def proba_and_embed(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Both at once; families that can share one forward pass override this."""
        return self.predict_proba(texts), self.embed(texts)

    def predict(self, texts: list[str]) -> list[list[str]]:
        """Label codes whose probability reaches the label's threshold, per text."""
        hits = self.predict_proba(texts) >= self.thresholds[None, :]
        return [[self.labels[j] for j in np.flatnonzero(row)] for row in hits]

    @abstractmethod
    def family_config(self) -> dict[str, Any]:
        """Family settings needed to load the weights again (stored in classifier.json)."""

    @abstractmethod
    def save_weights(self, directory: Path) -> None:
        """Write the family's weight files into `directory`."""


def _as_thresholds(value: np.ndarray | list[float] | float, n: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float32)
    if arr.ndim == 0:
        arr = np.full(n, float(arr), dtype=np.float32)
    if arr.shape != (n,):
        raise ValueError(f"thresholds has shape {arr.shape}, expected ({n},)")
    return arr


def _batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def torch_dtype(precision: str) -> Any:
    """The torch dtype of a precision name (fp32, bf16, fp16)."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def usable_attention(attention: str) -> str:
    """flash_attention_2 needs CUDA and the flash-attn package; fall back to sdpa otherwise."""
    if needs_cuda(None, attention) is None:
        return attention
    import importlib.util

    import torch

    ok = torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None
    return attention if ok else "sdpa"


class FinetuneClassifier(Classifier):
    """A fine-tuned `AutoModelForSequenceClassification` and its tokenizer."""

    family = "finetune"

    def __init__(self, model: Any, tokenizer: Any, max_length: int, batch_size: int = 32, **kw):
        super().__init__(**kw)
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size

    def _forward(self, texts: list[str], want_embed: bool) -> tuple[np.ndarray, np.ndarray | None]:
        import torch

        from tasks.embeddings import CPU_FORWARD_BATCH, length_passes, token_lengths

        self.model.eval()
        device = next(self.model.parameters()).device
        # Passes of similar lengths (restored to the callers' order below) pad little: on a GPU
        # sorted by characters in passes of batch_size; on a CPU small passes cut by token
        # length (tasks.embeddings.length_passes), as every padded token costs a real one's time.
        if device.type == "cpu":
            lengths = token_lengths(self.tokenizer, texts, self.max_length)
            passes = length_passes(lengths, min(self.batch_size, CPU_FORWARD_BATCH))
        else:
            by_chars = np.argsort([len(t) for t in texts], kind="stable").tolist()
            passes = [by_chars[sl] for sl in _batches(len(texts), self.batch_size)]
        order = np.array([i for idx in passes for i in idx], dtype=np.int64)
        probs, embs = [], []
        with torch.inference_mode():
            for idx in passes:
                enc = self.tokenizer(
                    [texts[i] for i in idx],
                    truncation=True,
                    max_length=self.max_length,
                    padding=True,
                    return_tensors="pt",
                ).to(device)
                out = self.model(**enc, output_hidden_states=want_embed)
                probs.append(torch.sigmoid(out.logits.float()).cpu().numpy())
                if want_embed:
                    # Mean of the last layer over real tokens: the encoder's view of the document.
                    mask = enc["attention_mask"].unsqueeze(-1).float()
                    hidden = out.hidden_states[-1].float()
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
                    pooled = torch.nn.functional.normalize(pooled, dim=-1)
                    embs.append(pooled.cpu().numpy())
        n_labels = len(self.labels)
        inverse = np.argsort(order, kind="stable")
        p = np.concatenate(probs)[inverse] if probs else np.zeros((0, n_labels), np.float32)
        e = None
        if want_embed:
            dim = self.model.config.hidden_size
            e = np.concatenate(embs)[inverse] if embs else np.zeros((0, dim), np.float32)
        return p.astype(np.float32), e

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return self._forward(list(texts), want_embed=False)[0]

    def embed(self, texts: list[str]) -> np.ndarray:
        e = self._forward(list(texts), want_embed=True)[1]
        assert e is not None
        return e

    def proba_and_embed(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        p, e = self._forward(list(texts), want_embed=True)
        assert e is not None
        return p, e

    def family_config(self) -> dict[str, Any]:
        return {"max_length": self.max_length, "weights": "model"}

    def save_weights(self, directory: Path) -> None:
        target = directory / "model"
        model = getattr(self.model, "module", self.model)  # unwrap DDP / DeepSpeed engines
        model.save_pretrained(target, safe_serialization=True)
        self.tokenizer.save_pretrained(target)


class FrozenHeadClassifier(Classifier):
    """A linear or one-hidden-layer MLP head on a frozen sentence encoder's embeddings.

    The head runs in numpy so that loading it needs no torch; `head` holds float32 arrays
    `w`, `b` (linear) or `w1`, `b1`, `w2`, `b2` (MLP, ReLU hidden layer).
    """

    family = "frozen_head"

    def __init__(
        self,
        head: dict[str, np.ndarray],
        encoder_model: str,
        encoder_max_length: int,
        encoder: Any = None,
        device: str | None = None,
        encoder_backend: str = "torch",
        encoder_quantize: str = "none",
        **kw,
    ):
        super().__init__(**kw)
        self.head = {k: np.asarray(v, dtype=np.float32) for k, v in head.items()}
        self.kind = "mlp" if "w1" in self.head else "linear"
        self.encoder_model = encoder_model
        self.encoder_max_length = encoder_max_length
        self.encoder_backend = encoder_backend
        self.encoder_quantize = encoder_quantize
        self.device = device
        self._encoder = encoder

    @property
    def encoder(self) -> Any:
        """The frozen sentence encoder, loaded at first use: on `device` (CPU when None) with
        its backend (`torch`; `onnx`: ONNX Runtime on the CPU; `auto`: ONNX on the CPU, torch on
        CUDA)."""
        from tasks.embeddings import load_encoder

        if self._encoder is None:
            device = self.device
            if self.encoder_backend == "onnx" or self.encoder_quantize != "none":
                # A head trained on ONNX Runtime's (int8) vectors reads them on any replica.
                device = "cpu"
            self._encoder = load_encoder(
                self.encoder_model,
                self.encoder_max_length,
                device,
                self.encoder_backend,
                self.encoder_quantize,
            )
        return self._encoder

    def _encode(self, texts: list[str]) -> np.ndarray:
        from tasks.embeddings import encode_texts

        return encode_texts(list(texts), self.encoder)

    def hidden(self, x: np.ndarray) -> np.ndarray:
        """The head's document representation: the MLP's hidden layer, or the input itself."""
        if self.kind == "linear":
            return x
        return np.maximum(x @ self.head["w1"].T + self.head["b1"], 0.0)

    def proba_from_embeddings(self, x: np.ndarray) -> np.ndarray:
        """Probabilities from precomputed encoder embeddings (the trial path: no re-encoding)."""
        h = self.hidden(x)
        w, b = (
            (self.head["w"], self.head["b"])
            if self.kind == "linear"
            else (
                self.head["w2"],
                self.head["b2"],
            )
        )
        return _sigmoid(h @ w.T + b)

    def embed_from_embeddings(self, x: np.ndarray) -> np.ndarray:
        h = self.hidden(x)
        norm = np.linalg.norm(h, axis=1, keepdims=True)
        return (h / np.maximum(norm, 1e-12)).astype(np.float32)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return self.proba_from_embeddings(self._encode(texts))

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.embed_from_embeddings(self._encode(texts))

    def proba_and_embed(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        x = self._encode(texts)
        return self.proba_from_embeddings(x), self.embed_from_embeddings(x)

    def family_config(self) -> dict[str, Any]:
        return {
            "head": self.kind,
            "encoder": {
                "model": self.encoder_model,
                "max_length": self.encoder_max_length,
                "backend": self.encoder_backend,
                "quantize": self.encoder_quantize,
            },
            "weights": "head.safetensors",
        }

    def save_weights(self, directory: Path) -> None:
        from safetensors.numpy import save_file

        save_file(
            {k: np.ascontiguousarray(v) for k, v in self.head.items()},
            str(directory / "head.safetensors"),
        )


def _sigmoid(z: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(z).astype(np.float32)


class TfidfLinearClassifier(Classifier):
    """TF-IDF features + one linear (logistic) model per label."""

    family = "tfidf_linear"

    def __init__(self, vectorizer: Any, coef: np.ndarray, intercept: np.ndarray, **kw):
        super().__init__(**kw)
        self.vectorizer = vectorizer
        self.coef = np.asarray(coef, dtype=np.float32)
        self.intercept = np.asarray(intercept, dtype=np.float32)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        x = self.vectorizer.transform(list(texts))
        return _sigmoid(np.asarray(x @ self.coef.T) + self.intercept)

    def embed(self, texts: list[str]) -> np.ndarray:
        # The tf-idf rows are already L2-normalized (norm="l2").
        return self.vectorizer.transform(list(texts)).astype(np.float32).toarray()

    def family_config(self) -> dict[str, Any]:
        v = self.vectorizer
        return {
            "ngram_range": list(v.ngram_range),
            "lowercase": v.lowercase,
            "sublinear_tf": v.sublinear_tf,
            "norm": v.norm,
            "smooth_idf": v.smooth_idf,
            "token_pattern": v.token_pattern,
            "strip_accents": v.strip_accents,
            "weights": "tfidf.safetensors",
            "vocabulary": "vocabulary.json",
        }

    def save_weights(self, directory: Path) -> None:
        from safetensors.numpy import save_file

        vocab = self.vectorizer.vocabulary_
        terms = [""] * len(vocab)
        for term, j in vocab.items():
            terms[j] = term
        (directory / "vocabulary.json").write_text(json.dumps(terms, ensure_ascii=False))
        tensors = {
            "idf": np.ascontiguousarray(self.vectorizer.idf_, dtype=np.float32),
            "coef": np.ascontiguousarray(self.coef),
            "intercept": np.ascontiguousarray(self.intercept),
        }
        save_file(tensors, str(directory / "tfidf.safetensors"))


class EnsembleClassifier(Classifier):
    """The mean probability of member classifiers (same label space), one threshold per label.

    Embeddings are the members' unit-normalized embeddings side by side, scaled by 1/sqrt(n), so
    the cosine of two documents is the mean of the members' cosines.
    """

    family = "ensemble"

    def __init__(self, members: dict[str, Classifier], **kw):
        super().__init__(**kw)
        if not members:
            raise ValueError("an ensemble needs at least one member")
        for name, m in members.items():
            if m.labels != self.labels:
                raise ValueError(f"member {name!r}: its labels differ from the ensemble's")
        self.members = dict(members)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return self.proba_and_embed(texts)[0]

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.proba_and_embed(texts)[1]

    def proba_and_embed(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return combine_members([m.proba_and_embed(list(texts)) for m in self.members.values()])

    def family_config(self) -> dict[str, Any]:
        return {"members": list(self.members)}

    def save_weights(self, directory: Path) -> None:
        for name, m in self.members.items():
            save_classifier(directory / "members" / name, m)


def combine_members(
    scored: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """Members' (probabilities, embeddings) to the ensemble's: mean probability; unit embeddings
    concatenated and scaled by 1/sqrt(n)."""
    probas = [np.asarray(p, dtype=np.float32) for p, _ in scored]
    embs = []
    for _, e in scored:
        e = np.asarray(e, dtype=np.float32)
        embs.append(e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12))
    emb = embs[0] if len(embs) == 1 else np.concatenate(embs, axis=1) / np.sqrt(len(embs))
    return np.mean(probas, axis=0), emb


def save_classifier(
    directory: Path | str,
    classifier: Classifier,
    *,
    metrics: dict[str, Any] | None = None,
    mix: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write a classifier folder atomically (temp folder, then rename) and return its path.

    `metrics`, `mix` and `provenance` are merged over the classifier's `meta` entries of the same
    name; `meta` also carries `precision`, `attention` and `trust_remote_code`.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    meta = classifier.meta
    doc = {
        "format": FORMAT_VERSION,
        "family": classifier.family,
        "labels": classifier.labels,
        "names": classifier.names,
        "thresholds": [float(t) for t in classifier.thresholds],
        "precision": meta.get("precision", "fp32"),
        "attention": meta.get("attention", "eager"),
        "trust_remote_code": bool(meta.get("trust_remote_code", False)),
        "mix": {**meta.get("mix", {}), **(mix or {})},
        "metrics": {**meta.get("metrics", {}), **(metrics or {})},
        "provenance": {**meta.get("provenance", {}), **(provenance or {})},
        "family_config": classifier.family_config(),
    }
    if meta.get("train_history"):  # per-validation-pass metrics of a fine-tune (its curve)
        doc["train_history"] = meta["train_history"]
    if classifier.family == ENSEMBLE:
        classifier.save_weights(tmp)
    else:
        from tasks.trials.families import family_class

        family_class(classifier.family).save(classifier, tmp)
    (tmp / CLASSIFIER_JSON).write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    replace_dir(tmp, directory)
    return directory


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def read_classifier_json(path: Path | str) -> dict[str, Any]:
    """The `classifier.json` of a checkpoint folder, checked for the fields every family needs."""
    file = Path(path) / CLASSIFIER_JSON
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no classifier.json; not a classifier checkpoint")
    doc = json.loads(file.read_text())
    missing = [k for k in ("family", "labels", "names", "thresholds") if k not in doc]
    if missing:
        raise ValueError(f"{file}: missing fields {missing}")
    known = checkpoint_families()
    if doc["family"] not in known:
        raise ValueError(f"{file}: family={doc['family']!r}, expected one of {known}")
    return doc


def load_classifier(
    path: Path | str, device: str | None = None, precision: str | None = None
) -> Classifier:
    """Load any family's checkpoint from safetensors; no pickle, no remote code unless allowed.

    `device` places the torch parts (a fine-tuned model, a frozen head's encoder, a SetFit body;
    ensemble members alike); None is the CPU. `precision` overrides the stored one for fine-tuned
    models (e.g. fp32 for CPU serving).
    """
    path = Path(path)
    doc = read_classifier_json(path)
    common = {
        "labels": doc["labels"],
        "names": doc["names"],
        "thresholds": doc["thresholds"],
        "meta": {k: v for k, v in doc.items() if k not in ("labels", "names", "thresholds")},
    }
    if doc["family"] == ENSEMBLE:
        members = {
            name: load_classifier(path / "members" / name, device, precision)
            for name in doc.get("family_config", {})["members"]
        }
        return EnsembleClassifier(members, **common)
    from tasks.trials.families import family_class

    return family_class(doc["family"]).load(path, doc, device, precision, common)
