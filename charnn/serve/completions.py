"""POST /v1/completions: OpenAI's text completions, streamed or whole, for one prompt or several."""

from __future__ import annotations

import secrets
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from charnn.serve.access import Served, authorized, check_prompt, check_sampling, config_of, pick, stops_of
from charnn.serve.collector import Collector, Delta, pace, sse, submit, usage
from charnn.serve.protocol import GENERATING, STREAMED, CompletionRequest, responses_for

router = APIRouter()
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post("/v1/completions", dependencies=[Depends(authorized)], responses={**STREAMED, **responses_for(*GENERATING)})
async def completions(body: CompletionRequest, request: Request) -> Any:
    """Continue each prompt `n` times; `stream` sends server-sent events as the text is made."""
    target = pick(request, body.model)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    stops = stops_of(body.stop)
    check_sampling(body.max_tokens, len(prompts), body.n, stops, config_of(request))
    for prompt in prompts:
        check_prompt(target, prompt, config_of(request))
    tickets = submit(target.batcher, prompts, body, body.max_tokens, stops)
    meta = {"id": f"cmpl-{secrets.token_hex(12)}", "object": "text_completion", "created": int(time.time()),
            "model": target.name}
    prompt_chars = sum(len(p) for p in prompts) * body.n
    if body.stream:
        collector = Collector(tickets, body.n, stops, lambda: pace(target.batcher))
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(sse(collector, lambda deltas: {**meta, "choices": [_choice(d) for d in deltas]},
                                     lambda: {**meta, "choices": [], "usage": usage(prompt_chars, collector.produced)},
                                     include_usage), media_type="text/event-stream", headers=SSE_HEADERS)
    return await _whole(target, tickets, body.n, stops, request, meta, prompt_chars)


def _choice(d: Delta) -> dict[str, Any]:
    return {"text": d.text, "index": d.index, "logprobs": None, "finish_reason": d.finish_reason}


async def _whole(target: Served, tickets: list, n: int, stops: list[str], request: Request, meta: dict[str, Any],
                 prompt_chars: int) -> dict[str, Any]:
    collector = Collector(tickets, n, stops, lambda: pace(target.batcher), request.is_disconnected)
    texts, reasons = await collector.whole()
    return {**meta, "choices": [_choice(Delta(i, t, r)) for i, (t, r) in enumerate(zip(texts, reasons, strict=True))],
            "usage": usage(prompt_chars, collector.produced)}
