"""The HTTP app: routers, error handlers, the body limit, and an OpenAPI schema that tells the truth.

Routes live in their own modules (`info`, `completions`, `chat`); they reach the runs through
`app.state` (`access.py`). Every error is OpenAI's JSON shape with a documented status: FastAPI's
422 becomes 400 (and leaves the schema), a 405 carries `Allow`, an engine-side failure maps by
its exception (`protocol.as_api_error`), and nothing unexpected escapes as anything but a JSON 500.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from charnn.serve import chat, completions, info
from charnn.serve.access import ServeConfig, Served
from charnn.serve.protocol import UNION_FIELDS, ApiError, as_api_error, error_body

MAX_BODY = 1 << 20  # bytes


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
    body = json.dumps(error_body(413, f"request body over {MAX_BODY:,} bytes — send less text")).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(served: list[Served], config: ServeConfig) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        for s in served:
            s.batcher.close()
        for worker in {id(s.batcher.worker): s.batcher.worker for s in served}.values():
            worker.close()

    app = FastAPI(title="charnn", version="1", description="Character-level text generation: OpenAI-compatible "
                  "completions and chat, scoring, and a page to play with a model.", docs_url="/docs", redoc_url=None,
                  lifespan=lifespan)
    app.state.served, app.state.config = served, config
    for module in (info, completions, chat):
        app.include_router(module.router)
    _handle_errors(app)
    app.add_middleware(BodyLimit)
    app.openapi = lambda: _schema(app)  # type: ignore[method-assign]
    return app


def _handle_errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(error_body(e.status, e.message, e.param, e.code), e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0]
        # A union's branches (str | list[str]) appear in the location as tags like 'constrained-str': drop them.
        where = [str(p) for p in first.get("loc", ()) if p != "body" and (isinstance(p, int) or str(p).isidentifier())]
        if first.get("type") == "json_invalid":
            message = f"the request body is not valid JSON ({first.get('msg', '')}) — send a JSON object"
            where = []
        elif not where:
            message = f"the request body must be a JSON object ({first.get('msg', '')})"
        elif first.get("type") == "extra_forbidden":
            message = (f"{'.'.join(where)} is not a field this server takes — drop it (GET /docs lists the fields; "
                       "a character model has no tools, functions or response formats)")
        elif len(where) == 1 and where[0] in UNION_FIELDS:  # which branch failed says less than what the field takes
            message = UNION_FIELDS[where[0]]
        else:
            message = f"{'.'.join(where)}: {first.get('msg', 'invalid')}"
        return JSONResponse(error_body(400, message, where[0] if where else None), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        message = {404: f"no such endpoint: {request.method} {request.url.path} — see /docs",
                   405: f"{request.method} is not allowed on {request.url.path} — see /docs"}.get(e.status_code, str(e.detail))
        return JSONResponse(error_body(e.status_code, message), e.status_code, headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception) -> JSONResponse:
        mapped = as_api_error(e)
        if mapped.status == 400:  # a CharnnError a route did not expect is still the request's fault
            return JSONResponse(error_body(400, mapped.message), 400)
        return JSONResponse(error_body(500, f"internal error ({type(e).__name__}) — please report it"), 500)


def _schema(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, less the 422 it documents by default (this server answers 400 instead), with the limits
    this server's options set (`ServeConfig`: the max_tokens cap, a prompt's length)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        bodies = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            bodies.pop(name, None)
        _state_limits(bodies, app.state.config)
        app.openapi_schema = schema
    return app.openapi_schema


def _state_limits(bodies: dict[str, Any], config: ServeConfig) -> None:
    for name, fields in (("CompletionRequest", ("max_tokens",)), ("ChatRequest", ("max_tokens", "max_completion_tokens"))):
        for field in fields:
            prop = bodies[name]["properties"][field]
            for option in prop.get("anyOf", [prop]):
                if option.get("type") == "integer":
                    option["maximum"] = config.max_tokens_cap
    for option in bodies["CompletionRequest"]["properties"]["prompt"]["anyOf"]:
        (option["items"] if option["type"] == "array" else option)["maxLength"] = config.max_prompt
