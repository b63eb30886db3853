"""A real Ray Serve on 127.0.0.1 serving a TF-IDF checkpoint trained here on real patents."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest
from demo_run import make_demo_run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.serve import ServeConfig
from serve.ingress import ray_env
from serve.launch import start_server, stop_server
from tasks.checkpoint import load_classifier
from tasks.net import free_port

CFG = ServeConfig(
    max_texts=8, max_text_chars=2000, max_body_bytes=64_000, batch_wait_timeout_s=0.05
)


@pytest.fixture(scope="module", params=["haproxy", "proxy"])
def served(request, tmp_path_factory, uspto_path):
    """The API behind each front (`serve.ingress`): HAProxy (the default where it is found)
    with replicas serving HTTP, and Ray Serve's Python proxy."""
    import ray

    demo = make_demo_run(tmp_path_factory.mktemp("run"), uspto_path, n_train=400, n_test=32)
    env = ray_env(request.param)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():  # Serve reads them where Ray starts
            mp.setenv(key, value)
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=300 * 1024 * 1024,
        )
    try:
        cfg = CFG.model_copy(update={"ingress": request.param})
        running = start_server(demo.run_dir, cfg, host="127.0.0.1", port=free_port())
        assert running.ingress == request.param
        with httpx.Client(base_url=running.url, timeout=60.0) as client:
            yield demo, running, client
    finally:
        stop_server()
        ray.shutdown()


def _metric(client: httpx.Client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_predictions_equal_offline_model(served):
    demo, running, client = served
    texts = demo.test_texts[:8]
    r = client.post("/v1/classify", json={"texts": texts, "threshold": 0.0})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == demo.best_trial == running.trial_id
    offline = load_classifier(running.checkpoint)
    probs = offline.predict_proba(texts)
    for row, pred in zip(probs, r.json()["predictions"], strict=True):
        by_code = {lab["code"]: lab["probability"] for lab in pred["labels"]}
        assert len(by_code) == len(offline.labels)  # threshold 0: every label, with its prob
        got = np.array([by_code[c] for c in offline.labels])
        np.testing.assert_allclose(got, row, rtol=1e-6, atol=1e-7)
    tuned = client.post("/v1/classify", json={"texts": texts}).json()["predictions"]
    got_sets = [sorted(lab["code"] for lab in p["labels"]) for p in tuned]
    assert got_sets == [sorted(s) for s in offline.predict(texts)]


BAD = [
    ("invalid json", b'{"texts": ["a"', 422),
    ("wrong type", b'{"texts": [3.5]}', 422),
    ("empty list", b'{"texts": []}', 422),
    ("whitespace text", b'{"texts": ["   "]}', 422),
    ("too many texts", json.dumps({"texts": ["a"] * 9}).encode(), 413),
    ("body over limit", json.dumps({"texts": ["a" * 70_000]}).encode(), 413),
    ("bad top_k", b'{"texts": ["a"], "top_k": -1}', 422),
]


@pytest.mark.parametrize(("case", "body", "status"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_4xx_then_still_serving(served, case, body, status):
    demo, _, client = served
    r = client.post("/v1/classify", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, (case, r.text)
    assert r.json()["detail"]
    ok = client.post("/v1/classify", json={"texts": demo.test_texts[:1]})
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1


def test_overlong_text_truncated(served):
    _, _, client = served
    r = client.post("/v1/classify", json={"texts": ["valve " * 500]})
    assert r.status_code == 200
    assert r.json()["predictions"][0]["truncated"] is True
    assert r.json()["predictions"][0]["chars_used"] == 2000


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"texts": st.lists(st.text(max_size=40), max_size=10)},
        optional={
            "top_k": st.integers(-3, 50) | st.text(max_size=3) | st.none(),
            "threshold": st.floats(allow_nan=True) | st.booleans(),
        },
    ),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies)
def test_fuzz_json_body_never_5xx(served, body):
    _, _, client = served
    raw = json.dumps(body, allow_nan=True).encode()
    r = client.post("/v1/classify", content=raw, headers={"content-type": "application/json"})
    assert r.status_code < 500, (body, r.text)
    if r.status_code == 200:
        assert len(r.json()["predictions"]) == len(body["texts"])
    else:
        assert r.status_code in (400, 413, 422) and r.json()["detail"]


def test_server_answers_after_fuzz(served):
    _, _, client = served
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    assert len(client.get("/v1/labels").json()["labels"]) == 8


def test_concurrent_burst_is_batched(served):
    demo, running, client = served
    calls_before = _metric(client, "synthpat_model_calls_total")
    n = 24

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=running.url, timeout=60.0) as ac:
            rs = await asyncio.gather(
                *(ac.post("/v1/classify", json={"texts": [demo.test_texts[i]]}) for i in range(n))
            )
        return [r.status_code for r in rs]

    assert asyncio.run(burst()) == [200] * n
    calls = _metric(client, "synthpat_model_calls_total") - calls_before
    assert 1 <= calls < n  # fewer model calls than requests: texts were pooled


def test_model_card_and_runtime_batching(served):
    from ray import serve

    from serve.app import build_app
    from serve.select import select_checkpoint

    demo, running, client = served
    info = client.get("/v1/model").json()
    assert info["trial_id"] == demo.best_trial
    assert info["batching"] == {"max_batch_size": 32, "batch_wait_timeout_s": 0.05}
    assert info["ingress"] == running.ingress  # what the replica itself runs behind
    # Same code and checkpoint, new user_config: Serve reconfigures the live replica.
    new = CFG.model_copy(update={"max_batch_size": 4, "batch_wait_timeout_s": 0.02})
    serve.run(build_app(new, select_checkpoint(demo.run_dir)), name="synthpat", route_prefix="/")
    info = client.get("/v1/model").json()
    assert info["batching"] == {"max_batch_size": 4, "batch_wait_timeout_s": 0.02}


def test_app_builder_for_config_files(served):
    from ray.serve import Application

    from serve.app import app_from_args

    demo, _, _ = served
    assert isinstance(app_from_args({"run_dir": str(demo.run_dir)}), Application)
    with pytest.raises(ValueError, match="args need run_dir"):
        app_from_args({})
    with pytest.raises(ValueError, match="'zz': no such trial_id"):
        app_from_args({"run_dir": str(demo.run_dir), "checkpoint": "zz"})
