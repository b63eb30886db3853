"""The HTTP API as a FastAPI app, shared by the Ray Serve deployment and the unbatched baseline.

`create_api(server, infer, settings)` builds the routes around any `infer(texts) -> probs`
coroutine: the Serve deployment passes its `@serve.batch` method, the benchmark's baseline a plain
one-call-per-request function. Two ASGI middlewares wrap it: a body-size limit enforced before any
parsing (Content-Length and the stream itself), and Prometheus request counts and latencies. With
an API key set, the `/v1/*` routes and `/metrics` depend on FastAPI's `APIKeyHeader` (the OpenAPI
page shows the scheme); the probes stay open.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from serve.metrics import ServeMetrics
from serve.schemas import (
    ClassifyRequest,
    ClassifyResponse,
    ErrorBody,
    Health,
    LabelInfo,
    LabelScore,
    LabelsResponse,
    ModelInfo,
    Prediction,
    TextLimitError,
    check_texts,
)

Infer = Callable[[list[str]], Awaitable[np.ndarray]]
API_KEY_HEADER = "X-API-Key"


@dataclass(frozen=True)
class ApiSettings:
    max_texts: int = 64
    max_text_chars: int = 20000
    oversize_text: str = "truncate"
    max_body_bytes: int = 2_000_000
    api_key_sha256: str | None = None

    @classmethod
    def from_serve_config(cls, cfg: Any, api_key: str | None = None) -> ApiSettings:
        """Settings from a `ServeConfig`; only the key's hash travels to the replicas."""
        return cls(
            max_texts=cfg.max_texts,
            max_text_chars=cfg.max_text_chars,
            oversize_text=cfg.oversize_text,
            max_body_bytes=cfg.max_body_bytes,
            api_key_sha256=hash_key(api_key) if api_key else None,
        )


def hash_key(key: str) -> str:
    """The SHA-256 hex digest of an API key: what the replicas hold instead of the key."""
    return hashlib.sha256(key.encode()).hexdigest()


def format_predictions(
    probs: np.ndarray,
    codes: list[str],
    names: list[str],
    thresholds: np.ndarray,
    top_k: int | None = None,
    threshold: float | None = None,
) -> list[list[LabelScore]]:
    """Labels at or above their threshold (or the override), highest first, at most `top_k`."""
    thr = np.full(len(codes), threshold, np.float32) if threshold is not None else thresholds
    out = []
    for row in probs:
        hits = np.flatnonzero(row >= thr)
        hits = hits[np.argsort(-row[hits], kind="stable")]
        if top_k is not None:
            hits = hits[:top_k]
        out.append(
            [LabelScore(code=codes[j], name=names[j], probability=float(row[j])) for j in hits]
        )
    return out


class BodyLimitMiddleware:
    """413 for bodies over `limit` bytes, checked before the app parses anything.

    Content-Length is checked first; the body is then read and counted chunk by chunk, because a
    chunked upload has no Content-Length and a client may lie in it.
    """

    def __init__(self, app: Any, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await _json(send, 400, f"Content-Length {declared!r} is not a number")
                return
            if size > self.limit:
                await _json(send, 413, f"body: {size} bytes, the limit is {self.limit}")
                return
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.limit:
                await _json(send, 413, f"body: over {self.limit} bytes, the limit")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _json(send: Callable, status: int, detail: str) -> None:
    import json

    payload = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class MetricsMiddleware:
    """Counts every answer, including those of the body limit and of unknown paths."""

    def __init__(self, app: Any, metrics: ServeMetrics, known: set[str]):
        self.app = app
        self.metrics = metrics
        self.known = known  # unknown paths share one label: bounded cardinality

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in self.known else "other"
        status = {"code": 500}
        t0 = time.perf_counter()

        async def watch(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self.metrics.requests.labels(endpoint, scope.get("method", ""), status["code"]).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - t0)


def create_api(server: Any, infer: Infer, settings: ApiSettings, title: str = "synthpat") -> Any:
    """The FastAPI app for `server` (a `ClassifierServer`); `infer` runs the model."""
    from fastapi import APIRouter, FastAPI, HTTPException, Request, Security
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from fastapi.security import APIKeyHeader

    app = FastAPI(
        title=f"{title} patent classifier",
        version="1",
        description="Multi-label patent classification (CPC) with the study's best classifier.",
        responses={
            400: {"model": ErrorBody},
            401: {"model": ErrorBody},
            413: {"model": ErrorBody},
            422: {"model": ErrorBody},
        },
    )

    @app.exception_handler(TextLimitError)
    async def _limit(_: Request, exc: TextLimitError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # One readable line per problem, naming the field: "body.texts.0: Input should be ...".
        lines = [
            ".".join(str(p) for p in err.get("loc", ())) + f": {err.get('msg', 'invalid')}"
            for err in exc.errors()
        ]
        return JSONResponse({"detail": lines}, status_code=422)

    # auto_error=False: a missing key gets the same 401 and message as a wrong one.
    key_header = APIKeyHeader(
        name=API_KEY_HEADER, auto_error=False, description="The key named by serve.api_key_env."
    )

    async def require_key(given: str | None = Security(key_header)) -> None:
        # Hashes of equal length, compared in constant time: the key's length does not leak.
        if not hmac.compare_digest(hash_key(given or ""), settings.api_key_sha256 or ""):
            raise HTTPException(401, f"missing or wrong {API_KEY_HEADER} header")

    # The probes stay open; the model, its labels and the metrics need the key when one is set.
    guarded = APIRouter(dependencies=[Security(require_key)] if settings.api_key_sha256 else [])

    @guarded.post("/v1/classify", response_model=ClassifyResponse)
    async def classify(req: ClassifyRequest) -> ClassifyResponse:
        """Labels for each text, with probabilities, using the tuned per-label thresholds."""
        texts, cut = check_texts(
            req.texts, settings.max_texts, settings.max_text_chars, settings.oversize_text
        )
        probs = await infer(texts)
        labels = format_predictions(
            probs, server.codes, server.names, server.thresholds, req.top_k, req.threshold
        )
        preds = [
            Prediction(labels=row, truncated=c, chars_used=len(t))
            for row, c, t in zip(labels, cut, texts, strict=True)
        ]
        warnings = [
            f"texts[{i}] truncated to {settings.max_text_chars} characters"
            for i, c in enumerate(cut)
            if c
        ]
        return ClassifyResponse(model=server.trial_id, predictions=preds, warnings=warnings)

    @guarded.get("/v1/labels", response_model=LabelsResponse)
    async def labels() -> LabelsResponse:
        """The label space: codes, names and tuned thresholds."""
        return LabelsResponse(labels=[LabelInfo(**d) for d in server.label_infos()])

    @guarded.get("/v1/model", response_model=ModelInfo)
    async def model() -> ModelInfo:
        """Which trial is served, its training mix, metrics and provenance."""
        return ModelInfo(**server.model_info())

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get("/readyz", response_model=Health)
    async def readyz() -> Any:
        if not server.ready:
            return JSONResponse({"status": "loading"}, status_code=503)
        return Health(status="ok")

    @guarded.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        body, ctype = server.metrics.render()
        return Response(body, media_type=ctype)

    app.include_router(guarded)
    known = {r.path for r in app.routes if hasattr(r, "path")}
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=server.metrics, known=known)
    return app
