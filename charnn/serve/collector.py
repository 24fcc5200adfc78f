"""What completions and chat share: submitting a request's tickets, collecting their text, streaming it.

`Collector` turns the batcher's pieces into `Delta`s (text per choice, held back while it could
still become a stop string, then the finish reason); the non-streamed answer joins them and the
streamed one sends each batch as a server-sent event. An engine-side failure of a ticket arrives
as its exception and becomes the status it deserves (`protocol.as_api_error`): raised before a
stream starts, or sent as an error event followed by `[DONE]` once it has.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from charnn.sample import SampleConfig
from charnn.sample.logprobs import Logprob
from charnn.sample.steer import Steering
from charnn.serve.batcher import Batcher, Ticket
from charnn.serve.protocol import ApiError, Sampling, as_api_error, error_body

# After a chunk is sent, a stream collects what the engine produces for a while before the next
# one: the first character still goes out at once, but per-chunk costs (waking the event loop,
# JSON, HTTP framing, the client's parsing) are not paid per character. The pause grows with the
# number of samples in the batch, so the server sends about 1/PACE_PER_ROW chunks per second in all
# (one stream: a chunk every 10 ms; 10 or more: every 100 ms), measured in benchmarks/serve_load.py.
# The request's end cuts a pause short: its last chunk goes out at once, and its client's next request
# joins the batch without leaving a row idle.
PACE_PER_ROW = 0.01
PACE_MAX = 0.1


def pace(batcher: Batcher) -> float:
    return min(PACE_MAX, PACE_PER_ROW * max(1, batcher.load[0]))


def submit(batcher: Batcher, prompts: list[str], body: Sampling, max_tokens: int, stops: list[str],
           logprobs: int | None = None, steering: Steering | None = None) -> list[Ticket]:
    """One ticket per prompt (n samples each; prompt k is seeded seed + k); `logprobs`: record each character's
    log-probability and that many alternatives. All or none: a full queue is a 503."""
    tickets: list[Ticket] = []
    steering = steering or Steering()
    try:
        for k, prompt in enumerate(prompts):
            cfg = SampleConfig(length=max_tokens, temperature=body.temperature, top_k=body.top_k, top_p=body.top_p,
                               seed=None if body.seed is None else body.seed + k, num_samples=body.n, stop=stops or None,
                               logprobs=logprobs, voice=body.voice, steering=steering)
            tickets.append(batcher.submit(prompt or "\n", cfg))
    except Exception as e:
        for t in tickets:
            t.cancel()
        raise as_api_error(e) from None
    return tickets


def cut_at_stop(text: str, stops: list[str]) -> str:
    """The text before the stop string that ended it (OpenAI leaves the stop string out)."""
    ends = [len(text) - len(s) for s in stops if text.endswith(s)]
    return text[: min(ends)] if ends else text


class Holdback:
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


@dataclass
class Delta:
    index: int
    text: str
    finish_reason: str | None = None  # "stop" or "length" on a choice's last delta
    logprobs: list[Logprob] | None = None  # one per character of `text`, when the request asked for them
    offset: int = 0  # characters of this choice sent before `text`


class Collector:
    """The deltas of a request's tickets, batch by batch; `produced` counts generated characters
    (a stop string's included, as OpenAI counts them)."""

    def __init__(self, tickets: list[Ticket], n: int, stops: list[str], pace: Callable[[], float],
                 disconnected: Callable[[], Awaitable[bool]] | None = None):
        self.tickets, self.n, self.pace, self.disconnected = tickets, n, pace, disconnected
        self.holds = [Holdback(stops) for _ in range(len(tickets) * n)]
        self.sent = [0] * len(self.holds)  # characters of each choice sent so far
        self.produced = 0

    async def __aiter__(self) -> AsyncIterator[list[Delta]]:
        try:
            for k, ticket in enumerate(self.tickets):
                while True:
                    pieces, finished = await self._take(ticket)
                    if finished and ticket.error is not None:
                        raise as_api_error(ticket.error)
                    deltas = []
                    for i in range(self.n):
                        text = "".join(row[i] for row in pieces)
                        self.produced += len(text)
                        hold = self.holds[k * self.n + i]
                        out = hold.feed(text)
                        if finished:  # each choice's last delta carries its finish reason
                            stopped = ticket.stopped[i]
                            deltas.append(self._delta(ticket, k, i, out + hold.close(stopped),
                                                      "stop" if stopped else "length"))
                        elif out:
                            deltas.append(self._delta(ticket, k, i, out))
                    if deltas:
                        yield deltas
                    if finished:
                        break
                    await ticket.pause(self.pace())
        finally:  # the client went away (the response is cancelled) or the request ended: stop generating at once
            for t in self.tickets:
                t.cancel()

    def _delta(self, ticket: Ticket, k: int, i: int, text: str, reason: str | None = None) -> Delta:
        """Choice i of ticket k's next `text`; its characters' log-probabilities are the group's records at the
        same positions (one per character drawn, recorded before the pieces were pushed)."""
        index, sent = k * self.n + i, self.sent[k * self.n + i]
        self.sent[index] += len(text)
        group = ticket.group
        scores = None
        if ticket.cfg.logprobs is not None and group is not None:
            scores = group.logprobs[i][sent:sent + len(text)]
        return Delta(index, text, reason, scores, sent)

    async def _take(self, ticket: Ticket) -> tuple[list[list[str]], bool]:
        if self.disconnected is None:
            return await ticket.take()
        while True:  # a non-streamed request notices a client that left within half a second
            try:
                return await asyncio.wait_for(ticket.take(), timeout=0.5)
            except asyncio.TimeoutError:
                if await self.disconnected():
                    raise asyncio.CancelledError from None

    async def whole(self) -> list[Delta]:
        """Every choice whole, once all are done: its text, finish reason and log-probabilities, as one delta."""
        whole = [Delta(i, "", "length") for i in range(len(self.holds))]
        async for deltas in self:
            for d in deltas:
                w = whole[d.index]
                w.text += d.text
                if d.logprobs is not None:
                    w.logprobs = (w.logprobs or []) + d.logprobs
                if d.finish_reason:
                    w.finish_reason = d.finish_reason
        return whole


def usage(prompt: int, produced: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": produced, "total_tokens": prompt + produced}


def event(data: dict[str, Any] | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


async def sse(collector: Collector, chunk: Callable[[list[Delta]], dict[str, Any]], usage_chunk: Callable[[], dict[str, Any]],
              include_usage: bool) -> AsyncIterator[str]:
    """Server-sent events as OpenAI sends them: a chunk per batch of deltas (the last one of each choice
    carries its finish_reason), a usage chunk with no choices only when asked for, then [DONE].
    A failure after the stream began is an error event in OpenAI's shape, then [DONE]."""
    try:
        async for deltas in collector:
            yield event(chunk(deltas))
        if include_usage:
            yield event(usage_chunk())
    except ApiError as e:
        yield event(error_body(e.status, e.message, e.param, e.code))
    yield event("[DONE]")
