"""POST /v1/completions: OpenAI's text completions, streamed or whole, for one prompt or several."""

from __future__ import annotations

import secrets
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from charnn.errors import CharnnError
from charnn.serve.access import (
    Served,
    authorized,
    check_prompt,
    check_sampling,
    check_voice,
    config_of,
    max_tokens_of,
    pick,
    steering_of,
    stops_of,
)
from charnn.serve.collector import Collector, Delta, pace, sse, submit, usage
from charnn.serve.protocol import GENERATING, ApiError, CompletionRequest, responses_for
from charnn.serve.replies import Completion, streamed

router = APIRouter()
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post("/v1/completions", dependencies=[Depends(authorized)],
             responses={**streamed(Completion, Completion, "text_completion chunk"), **responses_for(*GENERATING)})
async def completions(body: CompletionRequest, request: Request) -> Any:
    """Continue each prompt `n` times; `stream` sends server-sent events as the text is made."""
    target = pick(request, body.model)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    stops = stops_of(body.stop)
    max_tokens = max_tokens_of(config_of(request), max_tokens=body.max_tokens)
    check_sampling(len(prompts), body.n, stops)
    check_voice(target, body.voice)
    for prompt in prompts:
        check_prompt(target, prompt, config_of(request))
    if body.originality:
        await _index(target)
    steering = await steering_of(target, body)
    tickets = submit(target.batcher, prompts, body, max_tokens, stops, body.logprobs, steering)
    meta = {"id": f"cmpl-{secrets.token_hex(12)}", "object": "text_completion", "created": int(time.time()),
            "model": target.name}
    prompt_chars = sum(len(p) for p in prompts) * body.n
    copies = Copies(target, prompts, body.n, body.min_copy) if body.originality else None
    if body.stream:
        collector = Collector(tickets, body.n, stops, lambda: pace(target.batcher))
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(sse(collector, lambda deltas: {**meta, "choices": [_choice(d, prompts, body.n, copies)
                                                                                    for d in deltas]},
                                     lambda: {**meta, "choices": [], "usage": usage(prompt_chars, collector.produced)},
                                     include_usage), media_type="text/event-stream", headers=SSE_HEADERS)
    return await _whole(target, tickets, prompts, body.n, stops, request, meta, prompt_chars, copies)


class Copies:
    """The `originality` of each choice: its text is gathered as it streams, and reported with its last delta."""

    def __init__(self, target: Served, prompts: list[str], n: int, min_copy: int):
        self.target, self.prompts, self.n, self.min_copy = target, prompts, n, min_copy
        self.texts: dict[int, str] = {}

    def of(self, d: Delta) -> dict[str, Any] | None:
        self.texts[d.index] = self.texts.get(d.index, "") + d.text
        if not d.finish_reason:
            return None
        prompt = self.prompts[d.index // self.n]
        report = self.target.model.originality(prompt + self.texts[d.index], len(prompt), self.min_copy)
        return report.to_json()


async def _index(target: Served) -> None:
    """The run's originality index (built by the first request that asks; its corpus must be on this machine)."""
    try:
        await run_in_threadpool(target.model.originality_index)
    except CharnnError as e:
        raise ApiError(400, f"originality is not available for '{target.name}': {e}", param="originality",
                       code="originality_unavailable") from None


def _choice(d: Delta, prompts: list[str], n: int, copies: Copies | None = None) -> dict[str, Any]:
    choice = {"text": d.text, "index": d.index, "logprobs": None if d.logprobs is None else
              _logprobs(d, len(prompts[d.index // n])), "finish_reason": d.finish_reason}
    if copies is not None and (report := copies.of(d)) is not None:
        choice["originality"] = report
    return choice


def _logprobs(d: Delta, prompt_chars: int) -> dict[str, Any]:
    """OpenAI's completions `logprobs` object for a delta: tokens are characters; text_offset counts from the start
    of prompt + completion, as OpenAI's does."""
    scores = d.logprobs or []
    return {"tokens": [s.char for s in scores], "token_logprobs": [s.logprob for s in scores],
            "top_logprobs": [dict(s.top) for s in scores],
            "text_offset": [prompt_chars + d.offset + j for j in range(len(scores))]}


async def _whole(target: Served, tickets: list, prompts: list[str], n: int, stops: list[str], request: Request,
                 meta: dict[str, Any], prompt_chars: int, copies: Copies | None) -> dict[str, Any]:
    collector = Collector(tickets, n, stops, lambda: pace(target.batcher), request.is_disconnected)
    whole = await collector.whole()
    choices = [_choice(d, prompts, n) for d in whole]
    if copies is not None:
        reports = await run_in_threadpool(lambda: [copies.of(Delta(d.index, d.text, "stop")) for d in whole])
        for choice, report in zip(choices, reports, strict=True):
            choice["originality"] = report
    return {**meta, "choices": choices, "usage": usage(prompt_chars, collector.produced)}
