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
    steering_of,
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


# What a transcript is built from when the server's defaults would use characters a model never saw, best first.
NAME_ENDS = (":\n", "\n", ": ", " ")  # between a speaker's name and the message
MESSAGE_ENDS = ("\n\n", "\n", " ")  # after a message: where the next speaker starts (a reply stops there)


def chat_style(config: ServeConfig, known: Callable[[str], bool]) -> tuple[dict[str, str], str]:
    """The speakers' names and the template for one model. The server's own where the user chose them (a request
    that then needs a character the model lacks is a 400) or the model can write them; else from the model's
    alphabet: each default name as it is, lower-cased (no capitals), or left out (a letter it lacks); the default
    template where it knows its characters, else the first separators it knows (`NAME_ENDS`, `MESSAGE_ENDS`). So
    chat answers on any model that has a character to end a message with."""
    names = {"system": config.system_name, "user": config.user_name, "assistant": config.assistant_name}
    defaults = ServeConfig()
    chosen = ((defaults.system_name, defaults.user_name, defaults.assistant_name) != tuple(names.values())
              or config.chat_template != defaults.chat_template)
    if chosen or (all(known(n) for n in names.values()) and known(_literal(config.chat_template))):
        return names, config.chat_template
    spelled = {role: name if known(name) else name.lower() if known(name.lower()) else "" for role, name in names.items()}
    if known(_literal(config.chat_template)) and spelled["user"] and spelled["assistant"]:
        return spelled, config.chat_template
    end = next((e for e in MESSAGE_ENDS if known(e)), None)
    if end is None:
        return names, config.chat_template  # nothing to end a message with: chat cannot work, and says why per request
    if not (spelled["user"] and spelled["assistant"]):
        return {role: "" for role in names}, "{content}" + end
    return spelled, "{name}" + next((e for e in NAME_ENDS if known(e) and e != end), "") + "{content}" + end


def _literal(template: str) -> str:
    return template.replace("{name}", "").replace("{content}", "")


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
    speakers = target.chat_names or chat_style(config, lambda _: True)[0]
    chat = transcript(body.messages, body.template or target.chat_template or config.chat_template,
                      names_of(body, speakers))
    stops = stops_of(body.stop)
    max_tokens = max_tokens_of(config, max_completion_tokens=body.max_completion_tokens, max_tokens=body.max_tokens)
    check_sampling(1, body.n, stops)
    check_voice(target, body.voice)
    check_prompt(target, chat.prompt, config, "messages", "remove them, or pick names and a template in the "
                 "model's alphabet (assistant_name, user_name, template; or the message's name)")
    stops.append(chat.stop)
    steering = await steering_of(target, body)
    tickets = submit(target.batcher, [chat.prompt], body, max_tokens, stops,
                     (body.top_logprobs or 0) if body.logprobs else None, steering)
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
