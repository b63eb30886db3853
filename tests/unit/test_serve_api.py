"""The HTTP API without Ray: validation, limits, API key, metrics, on a real TF-IDF checkpoint."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from demo_run import make_demo_run
from fastapi.testclient import TestClient

from serve.api import ApiSettings, create_api, format_predictions, hash_key
from serve.select import select_checkpoint
from serve.server import ClassifierServer, server_spec


@pytest.fixture(scope="module")
def demo(tmp_path_factory, uspto_path):
    return make_demo_run(tmp_path_factory.mktemp("run"), uspto_path, n_train=300, n_test=16)


@pytest.fixture(scope="module")
def server(demo):
    return ClassifierServer(server_spec(select_checkpoint(demo.run_dir)))


def _client(server, **settings) -> TestClient:
    async def infer(texts: list[str]) -> np.ndarray:
        return await asyncio.to_thread(server.predict_proba, texts)

    base = {"max_texts": 4, "max_text_chars": 200, "max_body_bytes": 4096}
    return TestClient(create_api(server, infer, ApiSettings(**{**base, **settings})))


@pytest.fixture(scope="module")
def client(server):
    return _client(server)


def test_classify_matches_offline_model(client, server, demo):
    texts = demo.test_texts[:4]
    texts = [t[:200] for t in texts]
    r = client.post("/v1/classify", json={"texts": texts, "threshold": 0.0, "top_k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == demo.best_trial
    probs = server.classifier.predict_proba(texts)
    for row, pred in zip(probs, body["predictions"], strict=True):
        top = np.argsort(-row, kind="stable")[:3]
        assert [lab["code"] for lab in pred["labels"]] == [server.codes[j] for j in top]
        got = [lab["probability"] for lab in pred["labels"]]
        np.testing.assert_allclose(got, row[top], rtol=1e-6)


def test_tuned_thresholds_decide_labels(client, server, demo):
    texts = [t[:200] for t in demo.test_texts[:4]]
    body = client.post("/v1/classify", json={"texts": texts}).json()
    expected = server.classifier.predict(texts)
    got = [sorted(lab["code"] for lab in p["labels"]) for p in body["predictions"]]
    assert got == [sorted(e) for e in expected]


def test_format_predictions_orders_and_caps():
    probs = np.array([[0.2, 0.9, 0.6, 0.1]], np.float32)
    thr = np.array([0.5, 0.5, 0.5, 0.05], np.float32)
    codes, names = ["A", "B", "C", "D"], ["a", "b", "c", "d"]
    assert [s.code for s in format_predictions(probs, codes, names, thr)[0]] == ["B", "C", "D"]
    assert [s.code for s in format_predictions(probs, codes, names, thr, top_k=1)[0]] == ["B"]
    over = format_predictions(probs, codes, names, thr, threshold=0.15)[0]
    assert [s.code for s in over] == ["B", "C", "A"]


BAD = [
    ("not json", b"{texts: [", 422, "JSON"),
    ("array body", b"[1, 2]", 422, "body"),
    ("texts missing", b"{}", 422, "body.texts"),
    ("texts not list", b'{"texts": "a patent"}', 422, "body.texts"),
    ("text not string", b'{"texts": [1]}', 422, "body.texts.0"),
    ("null text", b'{"texts": [null]}', 422, "body.texts.0"),
    ("empty list", b'{"texts": []}', 422, "empty"),
    ("whitespace text", b'{"texts": ["ok", "  \\n "]}', 422, "texts[1]"),
    ("too many texts", b'{"texts": ["a", "b", "c", "d", "e"]}', 413, "limit is 4"),
    ("top_k zero", b'{"texts": ["a"], "top_k": 0}', 422, "body.top_k"),
    ("top_k string", b'{"texts": ["a"], "top_k": "3"}', 422, "body.top_k"),
    ("threshold above 1", b'{"texts": ["a"], "threshold": 1.5}', 422, "body.threshold"),
    ("threshold NaN", b'{"texts": ["a"], "threshold": NaN}', 422, "body.threshold"),
    ("unknown field", b'{"texts": ["a"], "topk": 3}', 422, "body.topk"),
]


@pytest.mark.parametrize(("case", "body", "status", "needle"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_4xx_naming_the_problem(client, case, body, status, needle):
    r = client.post("/v1/classify", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, (case, r.text)
    assert needle.lower() in json.dumps(r.json()["detail"]).lower()
    assert client.get("/readyz").status_code == 200


def test_lone_surrogate_in_json_is_served(client):
    body = b'{"texts": ["A valve \\ud800 for a pump"]}'
    r = client.post("/v1/classify", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 1


def test_overlong_text_truncated_and_flagged(client):
    r = client.post("/v1/classify", json={"texts": ["semiconductor " * 40, "a valve"]})
    assert r.status_code == 200
    preds = r.json()["predictions"]
    assert [p["truncated"] for p in preds] == [True, False]
    assert preds[0]["chars_used"] == 200
    assert r.json()["warnings"] == ["texts[0] truncated to 200 characters"]


def test_overlong_text_rejected_when_configured(server):
    c = _client(server, oversize_text="reject")
    r = c.post("/v1/classify", json={"texts": ["x" * 201]})
    assert r.status_code == 413
    assert "texts[0]: 201 characters" in r.json()["detail"]


def test_body_limit_by_header_and_by_stream(client):
    big = json.dumps({"texts": ["a" * 5000]}).encode()
    r = client.post("/v1/classify", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit is 4096" in r.json()["detail"]

    def chunks():  # no Content-Length: a chunked upload, counted as it streams
        for _ in range(10):
            yield b"x" * 1000

    r = client.post("/v1/classify", content=chunks())
    assert r.status_code == 413 and "over 4096 bytes" in r.json()["detail"]


def test_api_key(server):
    c = _client(server, api_key_sha256=hash_key("s3cret"))
    missing = c.post("/v1/classify", json={"texts": ["a"]})
    assert missing.status_code == 401
    assert missing.json()["detail"] == "missing or wrong X-API-Key header"
    bad = c.post("/v1/classify", json={"texts": ["a"]}, headers={"X-API-Key": "nope"})
    assert bad.status_code == 401 and bad.json() == missing.json()
    ok = c.post("/v1/classify", json={"texts": ["a"]}, headers={"X-API-Key": "s3cret"})
    assert ok.status_code == 200
    # The key is checked before the body: an invalid body without it learns nothing.
    assert c.post("/v1/classify", json={"texts": []}).status_code == 401
    for path in ("/v1/labels", "/v1/model", "/metrics"):
        assert c.get(path).status_code == 401, path
        assert c.get(path, headers={"X-API-Key": "s3cret"}).status_code == 200, path
    assert c.get("/healthz").status_code == 200  # probes stay open
    assert c.get("/readyz").status_code == 200
    schemes = c.get("/openapi.json").json()["components"]["securitySchemes"]
    assert schemes == {
        "APIKeyHeader": {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "The key named by serve.api_key_env.",
        }
    }


def test_no_api_key_configured_means_open(client):
    assert client.get("/v1/labels").status_code == 200
    assert "securitySchemes" not in client.get("/openapi.json").json().get("components", {})


def test_labels_model_and_openapi(client, server, demo):
    labels = client.get("/v1/labels").json()["labels"]
    assert [d["code"] for d in labels] == server.codes and len(labels) == 8
    info = client.get("/v1/model").json()
    assert info["trial_id"] == demo.best_trial and info["family"] == "tfidf_linear"
    assert info["device"] == "cpu" and info["precision"] == "fp32"
    assert info["mix"]["arm"] == "real_only" and "val_micro_f1" in info["metrics"]
    spec = client.get("/openapi.json").json()
    assert {"/v1/classify", "/v1/labels", "/v1/model", "/healthz", "/readyz"} <= set(spec["paths"])


def test_metrics_count_requests_and_model_calls(server):
    c = _client(server)
    reg = server.metrics.registry

    def count(name: str, **labels) -> float:
        return reg.get_sample_value(name, labels) or 0.0

    ok = {"endpoint": "/v1/classify", "method": "POST", "status": "200"}
    bad = {**ok, "status": "422"}
    before = (
        count("synthpat_http_requests_total", **ok),
        count("synthpat_http_requests_total", **bad),
    )
    calls = count("synthpat_model_calls_total")
    c.post("/v1/classify", json={"texts": ["a valve", "a pump"]})
    c.post("/v1/classify", json={"texts": []})
    assert count("synthpat_http_requests_total", **ok) == before[0] + 1
    assert count("synthpat_http_requests_total", **bad) == before[1] + 1
    assert count("synthpat_model_calls_total") == calls + 1  # both texts in one call
    assert "synthpat_http_request_seconds_bucket" in c.get("/metrics").text


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, function-local imports included."""
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_server_and_http_layer_do_not_import_each_other():
    """Both use serve.metrics; serve.app is the one module that binds them."""
    folder = Path(__file__).resolve().parents[2] / "serve"
    imports = {p.name: _imported_modules(p) for p in folder.glob("*.py")}
    assert "serve.api" not in imports["server.py"] and "serve.server" not in imports["api.py"]
    assert "serve.metrics" in imports["server.py"] & imports["api.py"]
    assert {"serve.api", "serve.server"} <= imports["app.py"]


def test_an_ensemble_checkpoint_serves_the_members_mean(demo, tmp_path):
    from tasks.checkpoint import EnsembleClassifier, load_classifier, save_classifier

    sel = {t: select_checkpoint(demo.run_dir, trial_id=t) for t in ("t000-c10", "t001-c001")}
    members = {t: load_classifier(s.path) for t, s in sel.items()}
    first = members["t000-c10"]
    ens = EnsembleClassifier(members, labels=first.labels, names=first.names, thresholds=0.3)
    path = save_classifier(tmp_path / "ens", ens)
    srv = ClassifierServer({**server_spec(sel["t000-c10"]), "checkpoint": str(path)})
    texts = [t[:200] for t in demo.test_texts[:3]]
    mean = np.mean([m.predict_proba(texts) for m in members.values()], axis=0)
    np.testing.assert_allclose(srv.predict_proba(texts), mean, rtol=1e-5)
    r = _client(srv).post("/v1/classify", json={"texts": texts, "threshold": 0.0, "top_k": 1})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["labels"][0]["probability"] == pytest.approx(
        float(mean[0].max()), rel=1e-5
    )


def test_a_replica_without_the_run_folder_loads_the_shared_copy(
    demo, server, tmp_path, monkeypatch
):
    """On a cluster the run's folder is on the head: replicas elsewhere load the checkpoint that
    `server_spec` copied to the shared storage (a file:// URI here, s3:// on a cloud)."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "node-tmp"))
    (tmp_path / "node-tmp").mkdir()
    sel = select_checkpoint(demo.run_dir)
    spec = server_spec(sel, storage_path=f"file://{tmp_path / 'shared'}")
    uri = spec["checkpoint_uri"]
    assert uri.startswith(f"file://{tmp_path / 'shared'}/serve/{sel.path.name}-")
    copy = Path(uri.removeprefix("file://"))
    names = sorted(p.relative_to(sel.path) for p in sel.path.rglob("*") if p.is_file())
    assert sorted(p.relative_to(copy) for p in copy.rglob("*") if p.is_file()) == names
    stamp = (copy / "classifier.json").stat().st_mtime_ns
    assert server_spec(sel, storage_path=f"file://{tmp_path / 'shared'}")["checkpoint_uri"] == uri
    assert (copy / "classifier.json").stat().st_mtime_ns == stamp  # already there: not re-sent

    elsewhere = ClassifierServer({**spec, "checkpoint": str(tmp_path / "not-on-this-node")})
    assert elsewhere.path.parent == tmp_path / "node-tmp" / "synthpat-serve"
    texts = [t[:200] for t in demo.test_texts[:4]]
    np.testing.assert_array_equal(elsewhere.predict_proba(texts), server.predict_proba(texts))
    # The run's own folder wins where it exists; a spec with neither says what is missing.
    assert ClassifierServer(spec).path == sel.path.resolve()
    with pytest.raises(FileNotFoundError):
        ClassifierServer({**spec, "checkpoint": str(tmp_path / "gone"), "checkpoint_uri": None})


def test_checkpoint_copies_keep_nested_folders(demo, tmp_path, monkeypatch):
    """A fine-tuned checkpoint has `model/` inside: the shared copy and the node's copy keep it."""
    import shutil
    import tempfile

    from serve.server import local_checkpoint, stage_checkpoint

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    folder = tmp_path / "ck"
    shutil.copytree(select_checkpoint(demo.run_dir).path, folder)
    (folder / "model" / "sub").mkdir(parents=True)
    (folder / "model" / "sub" / "weights.bin").write_bytes(b"\0\1\2")
    uri = stage_checkpoint(folder, f"file://{tmp_path / 'shared'}")
    got = local_checkpoint({"checkpoint": str(tmp_path / "absent"), "checkpoint_uri": uri})
    assert (got / "model" / "sub" / "weights.bin").read_bytes() == b"\0\1\2"
    assert sorted(p.relative_to(got) for p in got.rglob("*")) == sorted(
        p.relative_to(folder) for p in folder.rglob("*")
    )
