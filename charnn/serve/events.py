"""Server-sent events for streamed completions, and OpenAI's stop-string rule.

A completion ends at a stop string and leaves it out of the text; while streaming, characters that
could still turn into a stop string are held back until that is decided.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from charnn.serve.batcher import Ticket


def raise_if_failed(ticket: Ticket) -> None:
    if ticket.error:
        raise RuntimeError(ticket.error)


def cut_at_stop(text: str, stops: list[str]) -> str:
    """The text before the stop string that ended it (OpenAI's completions leave the stop string out)."""
    ends = [len(text) - len(s) for s in stops if text.endswith(s)]
    return text[: min(ends)] if ends else text


class _Holdback:
    """Streams a choice's text but holds back what could still become a stop string."""

    def __init__(self, stops: list[str]):
        self.stops = stops
        self.held = ""
        self.matched = False

    def feed(self, piece: str) -> str:
        if self.matched:
            return ""
        self.held += piece
        hits = [i for i in (self.held.find(s) for s in self.stops) if i >= 0]
        if hits:  # a whole stop string arrived: emit what precedes it, never the stop string itself
            self.matched = True
            out, self.held = self.held[: min(hits)], ""
            return out
        keep = 0
        for s in self.stops:  # the longest tail of `held` that is a proper prefix of a stop string
            for k in range(min(len(s) - 1, len(self.held)), 0, -1):
                if s.startswith(self.held[-k:]):
                    keep = max(keep, k)
                    break
        out, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep :]
        return out

    def close(self, stopped: bool) -> str:
        rest, self.held = self.held, ""
        return "" if self.matched else cut_at_stop(rest, self.stops) if stopped else rest


async def stream(tickets: list[Ticket], stops: list[str], meta: dict[str, Any], n: int,
                 usage_prompt: int, pace: Callable[[], float]) -> AsyncIterator[str]:
    """Server-sent events: a `data: {…}` chunk per batch of pieces, final chunks with finish_reason, then [DONE]."""
    holds = [_Holdback(stops) for _ in range(len(tickets) * n)]
    produced = 0

    def chunk(choices: list[dict[str, Any]]) -> str:
        return f"data: {json.dumps({**meta, 'choices': choices})}\n\n"

    try:
        for k, ticket in enumerate(tickets):
            while True:
                pieces, finished = await ticket.take()
                joined = ["".join(row[i] for row in pieces) for i in range(n)]
                choices = []
                for i, text in enumerate(joined):
                    produced += len(text)
                    out = holds[k * n + i].feed(text)
                    if out:
                        choices.append({"text": out, "index": k * n + i, "logprobs": None, "finish_reason": None})
                if choices:
                    yield chunk(choices)
                    if not finished:
                        await asyncio.sleep(pace())
                if finished:
                    raise_if_failed(ticket)
                    yield chunk([{"text": holds[k * n + i].close(stopped), "index": k * n + i, "logprobs": None,
                                  "finish_reason": "stop" if stopped else "length"}
                                 for i, stopped in enumerate(ticket.stopped)])
                    break
        usage = {"prompt_tokens": usage_prompt, "completion_tokens": produced,
                 "total_tokens": usage_prompt + produced}
        yield f"data: {json.dumps({**meta, 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"
    finally:  # the client went away (the response is cancelled) or the stream ended: stop generating at once
        for t in tickets:
            t.cancel()
