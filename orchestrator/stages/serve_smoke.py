"""Stage `serve_smoke`: start the serving app on the best trial, classify two real test patents.

The last stage of a run: it proves the chosen checkpoint loads and answers over HTTP, then stops
Serve again. Without trial results (no trials stage yet, or one that checkpointed nothing) it
skips with a note instead of failing the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from config import StudyConfig
from orchestrator.cache import write_json_atomic
from orchestrator.stages.base import Stage, StageContext, StageOutput, console

SMOKE_TEXTS = 2


class ServeSmokeStage(Stage):
    name = "serve_smoke"
    depends_on = ("prepare",)

    def enabled(self, cfg: StudyConfig) -> bool:
        return cfg.serve.smoke

    def config_subset(self, cfg: StudyConfig) -> dict[str, Any]:
        # Where it binds does not change what it answers.
        return cfg.serve.model_dump(mode="json", exclude={"host", "port"})

    def external_inputs(self, cfg: StudyConfig) -> dict[str, Path]:
        # The trials results decide the checkpoint; re-run when they change.
        from orchestrator.stages.base import run_dir_for

        results = run_dir_for(cfg) / "trials" / "results.parquet"
        return {"trials_results": results} if results.is_file() else {}

    def run(self, ctx: StageContext) -> StageOutput:
        from serve.select import select_checkpoint

        results = ctx.store.stage_dir("trials") / "results.parquet"
        if not results.is_file():
            note = "skipped: no trials output to serve"
            console.print(f"[yellow]serve_smoke: {note}[/yellow]")
            write_json_atomic(ctx.out_dir / "smoke.json", {"status": "skipped", "reason": note})
            return StageOutput(rows={"classified": 0}, summary={"status_note": note})
        try:
            select_checkpoint(ctx.store.run_dir, ctx.cfg.serve.select_metric)
        except (ValueError, FileNotFoundError) as exc:
            note = f"skipped: {exc}"
            console.print(f"[yellow]serve_smoke: {note}[/yellow]")
            write_json_atomic(ctx.out_dir / "smoke.json", {"status": "skipped", "reason": note})
            return StageOutput(rows={"classified": 0}, summary={"status_note": note})
        texts = _test_texts(ctx.input_dir("prepare"), SMOKE_TEXTS)
        answer = smoke_test(ctx.store.run_dir, ctx.cfg, texts)
        write_json_atomic(ctx.out_dir / "smoke.json", answer)
        preds = answer["response"]["predictions"]
        note = f"served {answer['trial_id']}: " + "; ".join(
            ",".join(lab["code"] for lab in p["labels"]) or "(no label)" for p in preds
        )
        return StageOutput(rows={"classified": len(preds)}, summary={"status_note": note})


def _test_texts(prepare_dir: Path, n: int) -> list[dict[str, Any]]:
    from tasks.corpus import read_table, split_path

    test = read_table(split_path(prepare_dir, "test"))
    head = test.head(n)
    return [
        {"id": str(r.get("id", i)), "text": str(r["text"]), "labels": list(r.get("labels", []))}
        for i, r in enumerate(head.to_dict(orient="records"))
    ]


def smoke_test(run_dir: Path, cfg: StudyConfig, docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Start Serve on a free loopback port, classify `docs`, print the answer, stop Serve."""
    import httpx

    from serve.launch import api_key_from_env, free_port, start_server, stop_server

    port = free_port("127.0.0.1")
    running = start_server(run_dir, cfg.serve, host="127.0.0.1", port=port, resources=cfg.resources)
    try:
        headers = {}
        key = api_key_from_env(cfg.serve)
        if key:
            headers["X-API-Key"] = key
        r = httpx.post(
            f"{running.url}/v1/classify",
            json={"texts": [d["text"] for d in docs]},
            headers=headers,
            timeout=60.0,
        )
        if r.status_code != 200:
            raise RuntimeError(f"serve_smoke: /v1/classify answered {r.status_code}: {r.text}")
        response = r.json()
    finally:
        stop_server()
    for doc, pred in zip(docs, response["predictions"], strict=True):
        got = ", ".join(f"{lab['code']} ({lab['probability']:.2f})" for lab in pred["labels"])
        console.print(
            f"serve_smoke: {doc['id']}: predicted [{got or 'no label'}], true {doc['labels']}"
        )
    return {
        "status": "ok",
        "trial_id": running.trial_id,
        "checkpoint": running.checkpoint,
        "docs": docs,
        "response": response,
    }
