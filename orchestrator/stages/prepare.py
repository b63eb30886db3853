"""Stage `prepare`: load and validate real patents, choose labels, split, draw regimes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table

from config import StudyConfig
from orchestrator.stages.base import Stage, StageContext, StageOutput, console
from tasks.files import write_json_atomic


class PrepareStage(Stage):
    name = "prepare"
    fields = ("data",)

    def external_inputs(self, cfg: StudyConfig) -> dict[str, Path]:
        # The file's bytes count, not where it lies (`data.source.path` is not fingerprinted).
        return {"source": cfg.data.source.path}

    def run(self, ctx: StageContext) -> StageOutput:
        from tasks.artifacts import save_labels, save_split
        from tasks.prepare import prepare_dataset
        from tasks.records import load_records

        data = ctx.cfg.data
        with console.status(f"reading {data.source.path}"):
            loaded = load_records(
                data.source.path,
                data.source.format,
                data.source.limit,
                max_text_chars=data.source.max_text_chars,
            )
        with open(ctx.out_dir / "rejected.jsonl", "w") as f:
            for rej in loaded.rejected:
                f.write(json.dumps(rej.to_dict()) + "\n")
        for rej in loaded.rejected[:10]:
            console.print(f"[yellow]rejected[/yellow] {rej.file}:{rej.line}: {rej.reason}")
        if len(loaded.rejected) > 10:
            console.print(f"[yellow]... and {len(loaded.rejected) - 10} more (rejected.jsonl)")
        good = len(loaded.records)
        if good < data.source.min_good_records:
            raise ValueError(
                f"{data.source.path}: only {good} valid records "
                f"({len(loaded.rejected)} rejected), data.source.min_good_records="
                f"{data.source.min_good_records}; see rejected.jsonl for the reasons"
            )
        prepared = prepare_dataset(
            loaded.records,
            level=data.labels.level,
            top_k=data.labels.top_k,
            test_size=data.split.test_size,
            val_size=data.split.val_size,
            regimes={r.name: r.size for r in data.regimes},
            seed=data.seed,
            draws=data.regime_draws,
        )
        out = ctx.out_dir
        for split in ("train_pool", "val", "test"):
            save_split(out, split, getattr(prepared, split))
        for name, frame in prepared.regimes.items():
            save_split(out, name, frame)
        save_labels(out, prepared.labels)
        summary = {"records_read": good, "rejected": len(loaded.rejected), **prepared.summary}
        write_json_atomic(out / "summary.json", summary)
        _print_summary(summary)
        rows = {
            "records": good,
            "rejected": len(loaded.rejected),
            "train_pool": len(prepared.train_pool),
            "val": len(prepared.val),
            "test": len(prepared.test),
            **{f"regime:{k}": len(v) for k, v in prepared.regimes.items()},
        }
        return StageOutput(rows=rows, summary=summary)


def _print_summary(s: dict[str, Any]) -> None:
    t = Table(title=f"prepare: {s['labels']} labels ({s['level']})")
    for col in ("split", "docs", "labels present", "labels/doc"):
        t.add_column(col, justify="right" if col != "split" else "left")
    for name, st in {**s["splits"], **{f"regime {k}": v for k, v in s["regimes"].items()}}.items():
        t.add_row(name, str(st["docs"]), str(st["labels_present"]), f"{st['cardinality']:.2f}")
    console.print(t)
    covers = s.get("label_cover_sizes", [s["label_cover_size"]])
    cover = f"{covers[0]} docs" if len(covers) == 1 else f"{covers} docs (per draw)"
    console.print(
        f"read {s['records_read']}, rejected {s['rejected']}, no label in space "
        f"{s['dropped_no_label']}, duplicates {s['dropped_duplicates']}; label cover "
        f"{cover}; rarest in pool: {s['rarest_pool_labels']}"
    )
