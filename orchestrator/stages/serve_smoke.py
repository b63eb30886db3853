"""Stage `serve_smoke`: start the serving app on the best trial, classify two real test patents.

The last stage of a run: it proves the chosen checkpoint loads and answers over HTTP, then stops
Serve again. Without trial results (no trials stage yet, or one that checkpointed nothing) it
skips with a note instead of failing the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from config import StudyConfig
from orchestrator.stages.base import Stage, StageContext, StageOutput, console
from tasks.files import write_json_atomic

SMOKE_TEXTS = 2


class ServeSmokeStage(Stage):
    name = "serve_smoke"
    # The trials' results decide the checkpoint; prepare's test set gives the texts.
    reads = ("prepare", "trials")
    # Where it binds and how replicas scale do not change what it answers.
    fields = ("serve", "trials.select_metric")

    def enabled(self, cfg: StudyConfig) -> bool:
        return cfg.serve.smoke

    def run(self, ctx: StageContext) -> StageOutput:
        from serve.select import select_checkpoint

        results = ctx.store.stage_dir("trials") / "results.parquet"
        if "trials" not in ctx.inputs or not results.is_file():
            note = "skipped: no trials output to serve"
            console.print(f"[yellow]serve_smoke: {note}[/yellow]")
            write_json_atomic(ctx.out_dir / "smoke.json", {"status": "skipped", "reason": note})
            return StageOutput(rows={"classified": 0}, summary={"status_note": note})
        try:
            select_checkpoint(
                ctx.store.run_dir, ctx.cfg.serve.resolve_select_metric(ctx.cfg.trials)
            )
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
    from tasks.artifacts import load_split

    test = load_split(prepare_dir, "test")
    head = test.head(n)
    return [
        {"id": str(r.get("id", i)), "text": str(r["text"]), "labels": list(r.get("labels", []))}
        for i, r in enumerate(head.to_dict(orient="records"))
    ]


def smoke_test(run_dir: Path, cfg: StudyConfig, docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Start Serve on a free loopback port, classify `docs`, print the answer, stop Serve."""
    import httpx

    from orchestrator.ray_runtime import ensure_ray
    from serve.api import API_KEY_HEADER
    from serve.launch import api_key_from_env, start_server, stop_server
    from tasks.net import free_port

    running = start_server(
        run_dir,
        cfg.serve,
        host="127.0.0.1",
        port=free_port("127.0.0.1"),
        select_metric=cfg.serve.resolve_select_metric(cfg.trials),
        storage_path=cfg.resources.storage_path,
        connect_ray=lambda: ensure_ray(cfg.resources, cfg.serve.ingress),
    )
    try:
        headers = {}
        key = api_key_from_env(cfg.serve)
        if key:
            headers[API_KEY_HEADER] = key
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
        # No markup: "[no label]" would read as a rich tag and vanish.
        console.print(
            f"serve_smoke: {doc['id']}: predicted [{got or 'no label'}], true {doc['labels']}",
            markup=False,
        )
    return {
        "status": "ok",
        "trial_id": running.trial_id,
        "checkpoint": running.checkpoint,
        "docs": docs,
        "response": response,
    }
