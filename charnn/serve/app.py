"""The HTTP app: OpenAI-compatible completions, scoring, the model list, health, and the page.

Every error a client can cause is a 4xx with `{"error": {"message", "type", "param", "code"}}`
(the OpenAI shape); nothing a request names is read from or written to disk (`model` is
only looked up among the runs loaded at start).
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from charnn import checkpoint
from charnn.api import CharModel
from charnn.sample import SampleConfig
from charnn.serve.batcher import Batcher, Busy, Ticket
from charnn.serve.events import cut_at_stop, raise_if_failed, stream

MAX_BODY = 1 << 20  # bytes
MAX_N = 16
# After a chunk is sent, a stream collects what the engine produces for a while before the next
# one: the first character still goes out at once, but per-chunk costs (waking the event loop,
# JSON, HTTP framing, the client's parsing) are not paid per character. The pause grows with the
# number of samples in the batch, so the server sends about 1/PACE_PER_ROW chunks per second in all
# (one stream: a chunk every 10 ms; 10 or more: every 100 ms), measured in benchmarks/serve_load.py.
PACE_PER_ROW = 0.01
PACE_MAX = 0.1


def _pace(batcher: Batcher) -> float:
    return min(PACE_MAX, PACE_PER_ROW * max(1, batcher.load[0]))


@dataclass
class ServeConfig:
    max_tokens_cap: int = 5000  # characters one request may ask for
    max_prompt: int = 20_000  # characters of prompt (primed in one forward pass that the whole batch waits for)
    max_rows: int = 64  # samples stepped together per model
    max_waiting: int = 64  # requests queued per model beyond a full batch
    api_key: str | None = None


@dataclass
class Served:
    """A loaded run and its batcher."""

    name: str
    model: CharModel
    batcher: Batcher
    facts: dict[str, Any] = field(default_factory=dict)


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


class CompletionRequest(BaseModel):
    model: str | None = Field(None, description="A run name (GET /v1/models); default: the first served run.")
    prompt: str | list[str] = Field("\n", description="Text to continue; a list gives one completion each.")
    max_tokens: int = Field(200, ge=0, description="Characters to generate per completion (capped by the server).")
    temperature: float = Field(0.8, ge=0, le=10, description="Softmax temperature; 0 is greedy.")
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1, description="charnn extension: sample among the K most likely.")
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | list[str] | None = Field(None, description="Up to 4 strings; a completion ends before the first.")
    seed: int | None = Field(None, ge=0, lt=2**63)
    stream: bool = False
    user: str | None = None


class ScoreRequest(BaseModel):
    model: str | None = None
    text: str = Field(..., description="Text to score.")


class BodyLimit:
    """ASGI middleware: refuse bodies over MAX_BODY (413), by Content-Length or, without one, as they arrive.

    A body without Content-Length (chunked) is read here, at most MAX_BODY bytes, and replayed to the app.
    """

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > MAX_BODY:
                return await _refuse_large(send)
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client left before sending its body
            total += len(message.get("body", b""))
            if total > MAX_BODY:
                return await _refuse_large(send)
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed() -> dict[str, Any]:
            return replay.pop() if replay else await receive()

        return await self.app(scope, replayed, send)


async def _refuse_large(send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    body = json.dumps(_error_body(413, f"request body over {MAX_BODY:,} bytes — send less text")).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    kind = {401: "authentication_error", 404: "not_found_error", 413: "request_too_large", 503: "server_busy"}.get(
        status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def create_app(served: list[Served], config: ServeConfig) -> FastAPI:
    by_name = {s.name: s for s in served}
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        for s in served:
            s.batcher.close()

    app = FastAPI(title="charnn", version="1", description="Character-level text generation: OpenAI-compatible "
                  "completions, scoring and a page to play with a model.", docs_url="/docs", redoc_url=None,
                  lifespan=lifespan)
    page = (Path(__file__).parent / "page.html").read_text(encoding="utf-8")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(_error_body(e.status, e.message, e.param, e.code), e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0]
        where = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            message = f"the request body is not valid JSON ({first.get('msg', '')}) — send a JSON object"
            where = []
        elif not where:
            message = f"the request body must be a JSON object ({first.get('msg', '')})"
        else:
            message = f"{'.'.join(where)}: {first.get('msg', 'invalid')}"
        return JSONResponse(_error_body(400, message, where[0] if where else None), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        message = {404: f"no such endpoint: {request.method} {request.url.path} — see /docs",
                   405: f"{request.method} is not allowed on {request.url.path} — see /docs"}.get(e.status_code, str(e.detail))
        return JSONResponse(_error_body(e.status_code, message), e.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception) -> JSONResponse:
        return JSONResponse(_error_body(500, f"internal error ({type(e).__name__}) — please report it"), 500)

    app.add_middleware(BodyLimit)

    def authorized(request: Request) -> None:
        if config.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not (given.startswith("Bearer ") and secrets.compare_digest(given[7:].strip(), config.api_key)):
            raise ApiError(401, "missing or wrong API key — send the header 'Authorization: Bearer KEY'",
                           code="invalid_api_key")

    def pick(name: str | None) -> Served:
        if name is None:
            return served[0]
        if name not in by_name:
            raise ApiError(404, f"model '{name}' is not served here — use one of: {', '.join(by_name)}", "model",
                           "model_not_found")
        return by_name[name]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": {s.name: dict(zip(("rows", "waiting"), s.batcher.load, strict=True))
                                           for s in served}}

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": s.name, "object": "model", "created": s.facts.get("created", 0),
                                            "owned_by": "charnn", "charnn": s.facts} for s in served]}

    @app.post("/v1/score", dependencies=[Depends(authorized)])
    async def score(body: ScoreRequest) -> dict[str, Any]:
        target = pick(body.model)
        if len(body.text) < 2:
            raise ApiError(400, "text needs at least 2 characters to be scored", "text")
        result = await asyncio.to_thread(target.model.score, body.text)
        if result.characters < 2:
            raise ApiError(400, "text has fewer than 2 characters the model knows", "text")
        return {"object": "score", "model": target.name, "characters": result.characters, "nats": result.nats,
                "bits_per_character": result.bpc, "perplexity": result.perplexity,
                "unknown_characters": sum(result.unknown.values()), "unknown": result.unknown}

    @app.post("/v1/completions", dependencies=[Depends(authorized)])
    async def completions(body: CompletionRequest, request: Request) -> Any:
        target = pick(body.model)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        _check_completion(body, prompts, stops, config, target)
        n_choices = len(prompts) * body.n
        tickets: list[Ticket] = []
        try:
            for k, prompt in enumerate(prompts):
                cfg = SampleConfig(length=body.max_tokens, temperature=body.temperature, top_k=body.top_k,
                                   top_p=body.top_p, seed=None if body.seed is None else body.seed + k,
                                   num_samples=body.n, stop=stops or None)
                tickets.append(target.batcher.submit(prompt or "\n", cfg))
        except Busy as e:
            for t in tickets:
                t.cancel()
            raise ApiError(503, f"the server is busy ({e}) — retry in a second", headers={"Retry-After": "1"}) from None
        meta = {"id": f"cmpl-{secrets.token_hex(12)}", "object": "text_completion", "created": int(time.time()),
                "model": target.name}
        usage_prompt = sum(len(p) for p in prompts) * body.n
        if body.stream:
            events = stream(tickets, stops, meta, body.n, usage_prompt, lambda: _pace(target.batcher))
            return StreamingResponse(events, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        texts: list[str] = [""] * n_choices
        reasons: list[str] = ["length"] * n_choices
        produced = 0  # characters generated, a stop string's included (as when streaming)
        try:
            for k, ticket in enumerate(tickets):
                while True:
                    try:
                        pieces, finished = await asyncio.wait_for(ticket.take(), timeout=0.5)
                    except asyncio.TimeoutError:
                        if await request.is_disconnected():
                            raise asyncio.CancelledError from None
                        continue
                    for row in pieces:
                        for i, piece in enumerate(row):
                            texts[k * body.n + i] += piece
                            produced += len(piece)
                    if not finished:
                        await asyncio.sleep(_pace(target.batcher))  # the text is wanted whole: gather, do not wake per step
                        continue
                    if finished:
                        raise_if_failed(ticket)
                        for i, stopped in enumerate(ticket.stopped):
                            if stopped:
                                texts[k * body.n + i] = cut_at_stop(texts[k * body.n + i], stops)
                                reasons[k * body.n + i] = "stop"
                        break
        finally:
            for t in tickets:
                t.cancel()  # a no-op for finished ones; stops the rest if the client went away
        return {**meta, "choices": [{"text": t, "index": i, "logprobs": None, "finish_reason": r}
                                    for i, (t, r) in enumerate(zip(texts, reasons, strict=True))],
                "usage": {"prompt_tokens": usage_prompt, "completion_tokens": produced,
                          "total_tokens": usage_prompt + produced}}

    return app


def _check_completion(body: CompletionRequest, prompts: list[str], stops: list[str], config: ServeConfig,
                      target: Served) -> None:
    if body.max_tokens > config.max_tokens_cap:
        raise ApiError(400, f"max_tokens {body.max_tokens} is over this server's cap of {config.max_tokens_cap} "
                       "— ask for fewer (start the server with --max-tokens-cap to change it)", "max_tokens")
    if not prompts or len(prompts) * body.n > MAX_N:
        raise ApiError(400, f"{len(prompts)} prompt(s) x n {body.n} asks for {len(prompts) * body.n} completions — "
                       f"give 1 to {MAX_N} in all", "prompt" if len(prompts) != 1 else "n")
    if len(stops) > 4 or any(s == "" for s in stops):
        raise ApiError(400, "stop takes up to 4 non-empty strings", "stop")
    for prompt in prompts:
        if len(prompt) > config.max_prompt:
            raise ApiError(400, f"prompt has {len(prompt):,} characters; this server primes at most "
                           f"{config.max_prompt:,}", "prompt")
        if unknown := target.model.tokenizer.unknown_chars(prompt):
            shown = ", ".join(repr(c) for c in unknown[:10])
            raise ApiError(400, f"prompt has character(s) model '{target.name}' never saw: {shown} — remove them",
                           "prompt", "unknown_characters")


def facts_of(model: CharModel) -> dict[str, Any]:
    """What the page and GET /v1/models show about a run."""
    cfg = model.model.config
    metrics = checkpoint.read_metrics(model.run_dir)
    vals = [r["val_loss"] for r in metrics if isinstance(r.get("val_loss"), (int, float))]
    best = min(vals) if vals else None
    created = model.config.get("created", "")
    try:
        stamp = int(time.mktime(time.strptime(created, "%Y-%m-%dT%H:%M:%S")))
    except (TypeError, ValueError):
        stamp = 0
    return {"cell": cfg.cell, "layers": cfg.layers, "hidden": cfg.hidden, "parameters": model.model.num_parameters(),
            "vocabulary": cfg.vocab_size, "step": model.step,
            "characters_seen": max((r.get("tokens", 0) for r in metrics), default=0),
            "best_val_loss": best, "best_val_bpc": None if best is None else best / math.log(2), "created": stamp}
