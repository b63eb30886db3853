"""The dataset card of the exported corpora: `configs:` for `datasets.load_dataset`, then per
corpus its generator, sampling, prompt hash, filters, fidelity and leakage audit."""

from __future__ import annotations

from typing import Any

from tasks.export.cards import fmt, generator_settings, hub_id, md_table
from tasks.export.context import RunContext

#: fidelity/summary.parquet columns a dataset card shows, with their headers.
FIDELITY_COLUMNS = (
    ("mmd2", "MMD^2"),
    ("mmd_p", "MMD p"),
    ("frechet", "Frechet"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("density", "density"),
    ("coverage", "coverage"),
    ("label_js", "label JS"),
    ("distinct_2", "distinct-2"),
)


def dataset_configs(entries: list[dict[str, Any]], default: str | None) -> list[dict[str, Any]]:
    """The card's `configs:`: one per corpus (split `train`) and one per corpus's removed rows
    (split `removed`, config `<corpus_id>__removed`) where it has any; `default` (or the first
    corpus) is what `load_dataset(folder)` loads."""
    default = default if any(e["corpus_id"] == default for e in entries) else None
    configs = []
    for i, e in enumerate(entries):
        cid = e["corpus_id"]
        cfg: dict[str, Any] = {
            "config_name": cid,
            "data_files": [{"split": "train", "path": f"{cid}/train.parquet"}],
        }
        if cid == default or (default is None and i == 0):
            cfg["default"] = True
        configs.append(cfg)
        if e.get("removed_rows", 0):
            configs.append(
                {
                    "config_name": f"{cid}__removed",
                    "data_files": [{"split": "removed", "path": f"{cid}/removed.parquet"}],
                }
            )
    return configs


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return name
    return "100K<n<1M"


def _leakage(doc: dict[str, Any]) -> list[str]:
    kw = doc.get("keywords") or {}
    mem = doc.get("memorization") or {}
    near = mem.get("nearest_heldout") or {}
    train = mem.get("copy_train") or {}
    held = mem.get("copy_heldout") or {}
    n = mem.get("copy_ngram", "n")
    return [
        f"- label-name mentions: {fmt(kw.get('name_mention_rate'))} of rows "
        f"(real rows: {fmt(kw.get('name_mention_rate_real'))}); CPC code mentions "
        f"{fmt(kw.get('code_mention_rate'))} (real {fmt(kw.get('code_mention_rate_real'))}); "
        f"label keywords {fmt(kw.get('keyword_rate'))} (real {fmt(kw.get('keyword_rate_real'))})",
        f"- copying ({n}-grams): from the regime's real rows, {fmt(train.get('ngram_rate'))} of "
        f"n-grams, {fmt(train.get('row_rate'))} of rows (max per row "
        f"{fmt(train.get('row_max'))}); from held-out rows, {fmt(held.get('ngram_rate'))} of "
        "n-grams",
        f"- nearest held-out (val/test) document by cosine: mean {fmt(near.get('mean'))}, max "
        f"{fmt(near.get('max'))}, share above the near-copy threshold "
        f"{fmt(near.get('share_above'))}",
    ]


def _corpus_section(e: dict[str, Any], run: RunContext, prompt_hashes: list[str]) -> str:
    cid = e["corpus_id"]
    gen = generator_settings(run, e.get("generator"))
    g = run.generation
    sampling = ", ".join(
        f"{k} {gen[k]}"
        for k in ("temperature", "top_p", "top_k", "max_tokens", "dtype")
        if k in gen
    )
    filters = g.get("filters") or {}
    rows = [[k, v] for k, v in sorted((e.get("removed_by_filter") or {}).items())]
    lines = [
        f"### `{cid}`",
        "",
        f"- generator `{e.get('generator')}`: model `{gen.get('model', 'n/a')}`"
        + (f" ({hub_id(gen.get('model'))})" if hub_id(gen.get("model")) else ""),
        f"- sampling: {sampling or 'n/a'}; generation seed {g.get('seed', 'n/a')} (one seed per "
        "row, in the `seed` column)",
        f"- strategy `{e.get('strategy')}`, variant `{e.get('variant')}`; exemplars per prompt "
        f"{g.get('exemplars', 'n/a')} ({g.get('exemplar_words', 'n/a')} words each)",
        f"- prompt template hash: {', '.join(f'`{h}`' for h in prompt_hashes) or 'n/a'}",
        f"- real rows the prompts drew on: regime draw `{e.get('regime_key', e.get('regime'))}`, "
        f"n_real={e.get('n_real')}; planned {e.get('planned', 'n/a')} rows at ratios "
        f"{e.get('ratios', 'n/a')}",
        f"- kept {e.get('rows')} rows, removed {e.get('removed')}:",
        "",
        md_table(["filter", "rows removed"], rows) if rows else "(no filter counts recorded)",
        "",
        "Filter settings: " + (", ".join(f"{k}={v}" for k, v in sorted(filters.items())) or "n/a"),
    ]
    f = run.fidelity.get(cid)
    if f:
        lines += [
            "",
            "Fidelity against the regime's real rows (embeddings of the fidelity encoder):",
            "",
            md_table(
                [name for _, name in FIDELITY_COLUMNS],
                [[fmt(f.get(k), 4 if k.startswith("mmd") else 3) for k, _ in FIDELITY_COLUMNS]],
            ),
        ]
    doc = run.fidelity_docs.get(cid)
    if doc:
        lines += ["", "Leakage audit:", "", *_leakage(doc)]
    return "\n".join(lines)


def build_dataset_card(
    entries: list[dict[str, Any]],
    run: RunContext,
    default: str | None = None,
    prompt_hashes: dict[str, list[str]] | None = None,
) -> str:
    """README.md of the exported corpora: `configs:` for `datasets.load_dataset`, then per corpus
    its generator, sampling, prompt hash, filters with their counts, fidelity and leakage audit.

    `entries`: corpora.json entries, each with `removed_rows` (rows in its removed table)."""
    from huggingface_hub import DatasetCard, DatasetCardData

    total = sum(int(e.get("rows") or 0) for e in entries)
    data = DatasetCardData(
        language=["en"],
        task_categories=["text-classification"],
        task_ids=["multi-label-classification"],
        size_categories=[_size_category(total)],
        pretty_name=f"synthpat {run.study}: synthetic patents",
        tags=["synthetic", "llm-generated", "patents", "cpc", "synthpat"],
        source_datasets=[run.data_source] if run.data_source else None,
        configs=dataset_configs(entries, default),
    )
    sections = "\n\n".join(
        _corpus_section(e, run, (prompt_hashes or {}).get(e["corpus_id"], [])) for e in entries
    )
    body = f"""
# Synthetic patents of synthpat study `{run.study}`

LLM-generated patent abstracts with CPC subclass labels, one config per corpus
(`<regime key>__<generator>__<strategy>__<variant>`), written by the generate stage of
[synthpat](https://arxiv.org/abs/2605.24296) from the real patents of a low-resource regime
{f"of {run.data_source}" if run.data_source else ""}. `configs` below: split `train` holds the
rows the filters kept; `<corpus_id>__removed` the rows they removed, with `filter` and `reason`.

```python
from datasets import load_dataset

ds = load_dataset("PATH", "{entries[0]["corpus_id"] if entries else "CORPUS_ID"}")
```

Columns: `id`, `text`, `labels` (CPC subclass codes), `source` (`synthetic`), provenance
(`regime`, `draw`, `generator`, `strategy`, `variant`, `prompt_hash`, `seed`, `exemplar_ids`,
`source_id` (paraphrase source), `target_labels`, `prompt_tokens`, `output_tokens`,
`gen_seconds`, `attempts`, `finish_reason`) and `volume_rank` (the volume at ratio r is the
first `round(r * n_real)` rows by it).

## Corpora

{sections}

## Intended use and limits

- For studying synthetic training data in low-resource multi-label patent classification.
  Not real patents: claims, numbers and references in the text may be invented.
- Generated by a small LLM from a handful of real exemplars per prompt: expect repetition,
  truncation and off-label content that the filters only partly remove.
- The leakage audit measures label-name mentions and copying from real rows; it bounds
  leakage, it does not exclude it.
"""
    return str(DatasetCard(f"---\n{data.to_yaml()}\n---\n{body}"))
