"""A trained classifier as the folder the Hugging Face tools load, and that folder back.

One folder per export; every family writes `synthpat.json` (the checkpoint's classifier.json
with `family_config` pointing at the export's own files, plus the trial it came from) and
`thresholds.json` (`{code: threshold}`, the tuned per-label thresholds), and its weights:

- `finetune`: the folder is a `transformers` model folder (config.json with
  `problem_type: multi_label_classification`, `id2label`/`label2id` as the label codes and
  `thresholds` as `{code: threshold}`; safetensors weights; the tokenizer with
  `model_max_length` set to the family's `max_length`, so `truncation=True` cuts where the
  classifier does).
- `frozen_head`: the folder is a sentence-transformers folder of the frozen encoder
  (`max_seq_length` the family's); `head.safetensors` holds the head (`w`, `b`, or `w1`, `b1`,
  `w2`, `b2`), applied to unit-length embeddings, then a sigmoid.
- `setfit`: the same, with the fine-tuned body and the logistic head's `coef`, `intercept`.
  SetFit's own format keeps its head only as a pickle, which is never written here;
  `setfit_model(folder)` builds a `setfit.SetFitModel` from the folder.
- `tfidf_linear`: `model.skops`, a scikit-learn `Pipeline` (TfidfVectorizer,
  OneVsRestClassifier of LogisticRegression) in skops format (no pickle); its `predict_proba`
  gives the probabilities.

`load_export(folder)` rebuilds the project's `Classifier` from any of them (what `synthpat
serve` uses for an exported folder). Ensembles are refused: no single Hub format holds them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from tasks.checkpoint import ENSEMBLE, Classifier, read_classifier_json
from tasks.files import write_json_atomic, write_text_atomic

EXPORT_FORMAT = 1
EXPORT_JSON = "synthpat.json"
THRESHOLDS_JSON = "thresholds.json"
SKOPS_FILE = "model.skops"
HEAD_FILE = "head.safetensors"
#: Families an export can hold, and the Hub library that loads each.
LIBRARY = {
    "finetune": "transformers",
    "frozen_head": "sentence-transformers",
    "setfit": "sentence-transformers",
    "tfidf_linear": "sklearn",
}


class ExportError(ValueError):
    """A trial that cannot be exported as asked (the message says what to do instead)."""


def is_export(folder: Path | str) -> bool:
    """Whether `folder` is an exported classifier (it has synthpat.json)."""
    return (Path(folder) / EXPORT_JSON).is_file()


def read_export_json(folder: Path | str) -> dict[str, Any]:
    """The `synthpat.json` of an exported folder, checked for the fields every family needs."""
    file = Path(folder) / EXPORT_JSON
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no {EXPORT_JSON}; not an exported classifier")
    doc = json.loads(file.read_text())
    missing = [
        k for k in ("family", "labels", "names", "thresholds", "family_config") if k not in doc
    ]
    if missing:
        raise ValueError(f"{file}: missing fields {missing}")
    if doc["family"] not in LIBRARY:
        raise ValueError(f"{file}: family={doc['family']!r}, expected one of {tuple(LIBRARY)}")
    return doc


def export_classifier(
    checkpoint: Path | str, out: Path | str, trial: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write the checkpoint folder `checkpoint` as an export into `out` (created, must be empty
    or absent); return the export's synthpat.json document.

    `trial`: what the export records of its trial (`trial_id`, `row`, `select_metric`, ...).
    An ensemble raises `ExportError` naming `--trial`.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    doc = read_classifier_json(checkpoint)
    family = doc["family"]
    trial = dict(trial or {})
    if family == ENSEMBLE:
        members = doc.get("family_config", {}).get("members", [])
        raise ExportError(
            f"trial {trial.get('trial_id', checkpoint.name)!r} is an ensemble (members "
            f"{members}): the Hugging Face formats hold one model; export a single-model trial "
            "with --trial TRIAL_ID"
        )
    if family not in LIBRARY:
        raise ExportError(f"family {family!r} has no export; exportable: {tuple(LIBRARY)}")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"--to {out}: the folder is not empty")
    out.mkdir(parents=True, exist_ok=True)
    fc = doc.get("family_config", {})
    writer = {
        "finetune": _write_finetune,
        "frozen_head": _write_frozen_head,
        "setfit": _write_setfit,
        "tfidf_linear": _write_tfidf,
    }[family]
    family_config = writer(checkpoint, doc, fc, out)
    export = {
        **{k: v for k, v in doc.items() if k != "family_config"},
        "format": EXPORT_FORMAT,
        "family_config": family_config,
        "trial": trial,
    }
    # Label order, not sorted: the values line up with id2label and the probability columns.
    write_text_atomic(out / THRESHOLDS_JSON, json.dumps(thresholds_by_code(doc), indent=2) + "\n")
    write_json_atomic(out / EXPORT_JSON, export)
    return export


def thresholds_by_code(doc: dict[str, Any]) -> dict[str, float]:
    """`{code: threshold}` in label order."""
    return {c: float(t) for c, t in zip(doc["labels"], doc["thresholds"], strict=True)}


def _write_finetune(ck: Path, doc: dict, fc: dict, out: Path) -> dict[str, Any]:
    from transformers import AutoTokenizer

    src = ck / fc.get("weights", "model")
    for p in src.iterdir():
        if (
            p.is_file()
            and not p.name.startswith("tokenizer")
            and p.name != "special_tokens_map.json"
        ):
            shutil.copy2(p, out / p.name)
    max_length = int(fc.get("max_length", 256))
    config = json.loads((out / "config.json").read_text())
    config.update(finetune_config_fields(doc))
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    remote = bool(doc.get("trust_remote_code", False))
    tok = AutoTokenizer.from_pretrained(src, trust_remote_code=remote)
    # The classifier tokenizes with truncation=True, max_length=max_length: the same cut is
    # what `truncation=True` gives a pipeline once model_max_length is max_length.
    tok.model_max_length = max_length
    backend = getattr(tok, "_tokenizer", None)
    if backend is not None and hasattr(backend, "no_truncation"):
        backend.no_truncation()  # a leftover backend setting would contradict model_max_length
    for key in ("max_length", "stride", "truncation_strategy", "is_local", "local_files_only"):
        tok.init_kwargs.pop(key, None)
    tok.save_pretrained(out)
    return {"max_length": max_length, "weights": "."}


def finetune_config_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """What an exported fine-tune's config.json says of its labels and thresholds."""
    labels = list(doc["labels"])
    return {
        "problem_type": "multi_label_classification",
        "id2label": {str(i): c for i, c in enumerate(labels)},
        "label2id": {c: i for i, c in enumerate(labels)},
        "thresholds": thresholds_by_code(doc),
        "label_names": dict(zip(labels, doc["names"], strict=True)),
    }


def _write_encoder(encoder: Any, max_length: int, out: Path) -> None:
    encoder.max_seq_length = int(max_length)
    encoder.save(str(out), create_model_card=False, safe_serialization=True)


def _write_frozen_head(ck: Path, doc: dict, fc: dict, out: Path) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    from tasks.models import resolve_model

    enc = fc["encoder"]
    # Always the torch (sentence-transformers) model: an ONNX backend re-exports from it.
    st = SentenceTransformer(resolve_model(enc["model"]), device="cpu")
    _write_encoder(st, int(enc["max_length"]), out)
    shutil.copy2(ck / fc.get("weights", HEAD_FILE), out / HEAD_FILE)
    return {
        "head": fc.get("head", "linear"),
        "encoder": {
            "path": ".",
            "model": enc["model"],
            "max_length": int(enc["max_length"]),
            "backend": enc.get("backend", "torch"),
            "quantize": enc.get("quantize", "none"),
        },
        "normalize_embeddings": True,
        "activation": "sigmoid",
        "weights": HEAD_FILE,
    }


def _write_setfit(ck: Path, doc: dict, fc: dict, out: Path) -> dict[str, Any]:
    body = ck / fc.get("body", "body")
    for p in body.rglob("*"):
        if p.is_file():
            dest = out / p.relative_to(body)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dest)
    max_length = int(fc["max_length"])
    cfg_file = out / "sentence_bert_config.json"
    if cfg_file.is_file():  # the body trained and scores at the family's token limit
        st_cfg = json.loads(cfg_file.read_text())
        st_cfg["max_seq_length"] = max_length
        cfg_file.write_text(json.dumps(st_cfg, indent=2) + "\n")
    shutil.copy2(ck / fc.get("weights", HEAD_FILE), out / HEAD_FILE)
    return {
        "max_length": max_length,
        "model": fc.get("model", ""),
        "body": ".",
        "head": "logistic",
        "normalize_embeddings": True,
        "activation": "sigmoid",
        "weights": HEAD_FILE,
    }


def _write_tfidf(ck: Path, doc: dict, fc: dict, out: Path) -> dict[str, Any]:
    import skops.io as sio

    from tasks.checkpoint import load_classifier

    clf = load_classifier(ck)
    sio.dump(tfidf_pipeline(clf.vectorizer, clf.coef, clf.intercept), out / SKOPS_FILE)
    return {"weights": SKOPS_FILE, "format": "skops", "steps": ["tfidf", "clf"]}


def _logistic_ovr(coef: np.ndarray, intercept: np.ndarray) -> Any:
    """A fitted one-vs-rest logistic regression with exactly these weights (L labels, d inputs):
    its `predict_proba` is sigmoid(x @ coef.T + intercept), one column per label."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import LabelBinarizer

    coef = np.asarray(coef, dtype=np.float32)
    intercept = np.asarray(intercept, dtype=np.float32)
    n_labels, dim = coef.shape
    if n_labels < 2:
        # scikit-learn's one-vs-rest returns two columns for a single label.
        raise ExportError(f"a one-vs-rest export needs at least 2 labels, the model has {n_labels}")
    estimators = []
    for j in range(n_labels):
        lr = LogisticRegression(solver="liblinear")
        lr.classes_ = np.array([0, 1])
        lr.coef_ = coef[j : j + 1].copy()
        lr.intercept_ = intercept[j : j + 1].copy()
        lr.n_features_in_ = dim
        lr.n_iter_ = np.array([0], dtype=np.int32)
        estimators.append(lr)
    ovr = OneVsRestClassifier(LogisticRegression(solver="liblinear"))
    ovr.estimators_ = estimators
    # A multilabel-indicator binarizer makes predict_proba return per-label probabilities
    # (not normalized over labels).
    ovr.label_binarizer_ = LabelBinarizer(sparse_output=True).fit(
        np.array([[1] * n_labels, [0] * n_labels])
    )
    ovr.classes_ = ovr.label_binarizer_.classes_
    ovr.n_features_in_ = dim
    return ovr


def tfidf_pipeline(vectorizer: Any, coef: np.ndarray, intercept: np.ndarray) -> Any:
    """A scikit-learn Pipeline (`tfidf`, `clf`) whose predict_proba is the TF-IDF classifier's."""
    from sklearn.pipeline import Pipeline

    if not hasattr(vectorizer, "vocabulary_"):
        vectorizer._validate_vocabulary()  # a vocabulary given as a parameter: fitted as is
    return Pipeline([("tfidf", vectorizer), ("clf", _logistic_ovr(coef, intercept))])


def load_skops(path: Path | str) -> Any:
    """A skops file, trusting only scikit-learn and numpy types (anything else is refused)."""
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    foreign = [t for t in untrusted if not t.startswith(("sklearn.", "numpy.", "scipy."))]
    if foreign:
        raise ValueError(f"{path}: holds types outside scikit-learn/numpy/scipy: {foreign}")
    return sio.load(path, trusted=untrusted)


def load_export(
    folder: Path | str, device: str | None = None, precision: str | None = None
) -> Classifier:
    """An exported folder back to the project's classifier (same probabilities, labels and
    thresholds as the checkpoint it came from); `device` and `precision` as in
    `tasks.checkpoint.load_classifier`."""
    from tasks.trials.families import family_class

    folder = Path(folder)
    doc = read_export_json(folder)
    fc = doc["family_config"]
    common = {
        "labels": doc["labels"],
        "names": doc["names"],
        "thresholds": doc["thresholds"],
        "meta": {k: v for k, v in doc.items() if k not in ("labels", "names", "thresholds")},
    }
    family = doc["family"]
    if family in ("finetune", "setfit"):
        # Their checkpoint loaders read the files named in family_config: here ".".
        return family_class(family).load(folder, doc, device, precision, common)
    if family == "frozen_head":
        from safetensors.numpy import load_file

        from tasks.checkpoint import FrozenHeadClassifier

        enc = fc["encoder"]
        return FrozenHeadClassifier(
            load_file(str(folder / fc.get("weights", HEAD_FILE))),
            str((folder / enc.get("path", ".")).resolve()),
            int(enc["max_length"]),
            device=device,
            encoder_backend=enc.get("backend", "torch"),
            encoder_quantize=enc.get("quantize", "none"),
            **common,
        )
    from tasks.checkpoint import TfidfLinearClassifier

    pipe = load_skops(folder / fc.get("weights", SKOPS_FILE))
    ests = pipe.named_steps["clf"].estimators_
    coef = np.concatenate([e.coef_ for e in ests]).astype(np.float32)
    intercept = np.concatenate([e.intercept_ for e in ests]).astype(np.float32)
    return TfidfLinearClassifier(pipe.named_steps["tfidf"], coef, intercept, **common)


def setfit_model(folder: Path | str, device: str | None = None) -> Any:
    """A `setfit.SetFitModel` of an exported setfit folder: its body, and the logistic head
    rebuilt from head.safetensors (one-vs-rest, on normalized embeddings)."""
    import setfit
    from safetensors.numpy import load_file
    from sentence_transformers import SentenceTransformer

    folder = Path(folder)
    doc = read_export_json(folder)
    if doc["family"] != "setfit":
        raise ValueError(f"{folder}: family {doc['family']!r}, not a setfit export")
    fc = doc["family_config"]
    head = load_file(str(folder / fc.get("weights", HEAD_FILE)))
    body = SentenceTransformer(str(folder), device=device or "cpu")
    body.max_seq_length = int(fc["max_length"])
    return setfit.SetFitModel(
        model_body=body,
        model_head=_logistic_ovr(head["coef"], head["intercept"]),
        multi_target_strategy="one-vs-rest",
        normalize_embeddings=True,
        labels=list(doc["labels"]),
    )
