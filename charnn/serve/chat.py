"""POST /v1/chat/completions: chat for a model that continues text, through a transcript.

A character model knows no roles, so the messages become a transcript the way plays and chat
logs read, one message per `template` (default `'{name}:\\n{content}\\n\\n'`), and the model
continues it after the assistant's own header:

    User:                      <- user_name (or the message's `name`)
    What light through yonder window breaks?

    Assistant:                 <- assistant_name; the model writes from here
    <the reply>                <- ends where the template puts the next speaker: at '\\n\\n'

The reply ends at the text the template writes after `{content}` (its suffix; '\\n\\n' by
default), i.e. where the next speaker would begin; with an empty suffix, at the next user header.
Names and the template are the server's (`charnn serve --assistant-name … --chat-template …`)
unless a request sets them (charnn extensions `assistant_name`, `user_name`, `template`), and
a message's own `name` wins over its role's name: for a play, name the characters.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from charnn.errors import UsageError
from charnn.serve.access import (
    ServeConfig,
    authorized,
    check_prompt,
    check_sampling,
    check_voice,
    config_of,
    max_tokens_of,
    pick,
    stops_of,
)
from charnn.serve.collector import Collector, Delta, pace, sse, submit, usage
from charnn.serve.completions import SSE_HEADERS
from charnn.serve.protocol import GENERATING, ApiError, ChatRequest, Message, responses_for
from charnn.serve.replies import ChatChunk, ChatCompletion, streamed

router = APIRouter()


@dataclass
class Transcript:
    prompt: str  # the messages, then the assistant's header
    stop: str  # where the reply ends: the next speaker


def check_template(template: str, option: str = "template") -> None:
    """Raise UsageError unless the template has one {content}, {name} only before it, and an end after it."""
    if template.count("{content}") != 1:
        raise UsageError(f"{option} must hold {{content}} exactly once (and {{name}} where the speaker's name goes), "
                         "e.g. '{name}:\\n{content}\\n\\n'")
    if "{name}" in template.split("{content}")[1]:
        raise UsageError(f"{option}: {{name}} must come before {{content}}")


def transcript(messages: list[Message], template: str, names: dict[str, str]) -> Transcript:
    """The prompt a chat becomes, and where the reply stops. `names` maps a role to its speaker's name."""
    try:
        check_template(template)
    except UsageError as e:
        raise ApiError(400, str(e), "template") from None
    before, after = template.split("{content}")

    def header(name: str) -> str:
        return before.replace("{name}", name)

    prompt = "".join(header(m.name or names[m.role]) + m.text() + after for m in messages)
    stop = after if after else header(names["user"])
    if not stop:
        raise ApiError(400, "template marks no end of a reply: put text after {content} (e.g. '\\n\\n')", "template")
    return Transcript(prompt + header(names["assistant"]), stop)


def chat_names(config: ServeConfig, known: Callable[[str], bool]) -> dict[str, str]:
    """The speakers' names for one model: the server's, except that a default name the model cannot spell (a
    lowercase corpus has no 'U' or 'A') becomes its lowercase form where the model knows that and the template.
    Names the user chose are kept as given (a request that needs one it cannot spell is then a 400)."""
    names = {"system": config.system_name, "user": config.user_name, "assistant": config.assistant_name}
    defaults = ServeConfig()
    if (defaults.system_name, defaults.user_name, defaults.assistant_name) != tuple(names.values()):
        return names
    if not known(config.chat_template.replace("{name}", "").replace("{content}", "")):
        return names
    return {role: name if known(name) or not known(name.lower()) else name.lower() for role, name in names.items()}


def names_of(body: ChatRequest, defaults: dict[str, str]) -> dict[str, str]:
    """Role -> speaker for this request: its own names over the model's (`chat_names`)."""
    system = defaults["system"]
    return {"system": system, "developer": system, "user": body.user_name or defaults["user"],
            "assistant": body.assistant_name or defaults["assistant"]}


@router.post("/v1/chat/completions", dependencies=[Depends(authorized)],
             responses={**streamed(ChatChunk, ChatCompletion, "chat.completion.chunk"), **responses_for(*GENERATING)})
async def chat_completions(body: ChatRequest, request: Request) -> Any:
    """The assistant's next message, `n` times; `stream` sends chat.completion.chunk events."""
    if body.top_logprobs is not None and not body.logprobs:
        raise ApiError(400, "top_logprobs needs logprobs: true", "top_logprobs", "top_logprobs_without_logprobs")
    config = config_of(request)
    target = pick(request, body.model)
    speakers = target.chat_names or chat_names(config, lambda _: True)
    chat = transcript(body.messages, body.template or config.chat_template, names_of(body, speakers))
    stops = stops_of(body.stop)
    max_tokens = max_tokens_of(config, max_completion_tokens=body.max_completion_tokens, max_tokens=body.max_tokens)
    check_sampling(1, body.n, stops)
    check_voice(target, body.voice)
    check_prompt(target, chat.prompt, config, "messages", "remove them, or pick names and a template in the "
                 "model's alphabet (assistant_name, user_name, template; or the message's name)")
    stops.append(chat.stop)
    tickets = submit(target.batcher, [chat.prompt], body, max_tokens, stops,
                     (body.top_logprobs or 0) if body.logprobs else None)
    meta = {"id": f"chatcmpl-{secrets.token_hex(12)}", "created": int(time.time()), "model": target.name}
    prompt_chars = len(chat.prompt)
    collector = Collector(tickets, body.n, stops, lambda: pace(target.batcher),
                          None if body.stream else request.is_disconnected)
    if body.stream:
        first = [True] * body.n

        def chunk(deltas: list[Delta]) -> dict[str, Any]:
            choices = []
            for d in deltas:
                delta: dict[str, Any] = {"role": "assistant"} if first[d.index] else {}
                first[d.index] = False
                if d.text or not d.finish_reason:
                    delta["content"] = d.text
                choices.append({"index": d.index, "delta": delta, "logprobs": _logprobs(d), "finish_reason": d.finish_reason})
            return {**meta, "object": "chat.completion.chunk", "choices": choices}

        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(sse(collector, chunk, lambda: {**meta, "object": "chat.completion.chunk", "choices": [],
                                                                "usage": usage(prompt_chars, collector.produced)},
                                     include_usage), media_type="text/event-stream", headers=SSE_HEADERS)
    whole = await collector.whole()
    return {**meta, "object": "chat.completion",
            "choices": [{"index": d.index, "message": {"role": "assistant", "content": d.text}, "logprobs": _logprobs(d),
                         "finish_reason": d.finish_reason} for d in whole],
            "usage": usage(prompt_chars, collector.produced)}


def _logprobs(d: Delta) -> dict[str, Any] | None:
    """OpenAI's chat `logprobs` object: one `content` entry per character, with its UTF-8 bytes."""
    if d.logprobs is None:
        return None

    def entry(char: str, logprob: float) -> dict[str, Any]:
        return {"token": char, "logprob": logprob, "bytes": list(char.encode("utf-8"))}

    return {"content": [{**entry(s.char, s.logprob), "top_logprobs": [entry(c, v) for c, v in s.top]}
                        for s in d.logprobs], "refusal": None}
