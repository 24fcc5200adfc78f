"""What every route shares: the server's config, the served runs, the API key check, the model lookup.

Routes reach the runs through `request.app.state.served` (set by `create_app`), never a global,
so two apps in one process (the tests) keep apart. Nothing a request names is read from disk:
`model` is only looked up among the runs loaded at start.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from charnn.api import CharModel
from charnn.errors import CharnnError, UsageError
from charnn.sample.request import voice_of
from charnn.sample.steer import Steering
from charnn.serve.batcher import Batcher
from charnn.serve.protocol import MAX_N, MAX_STOPS, ApiError, Sampling

DEFAULT_TEMPLATE = "{name}:\n{content}\n\n"
DEFAULT_MAX_TOKENS = 200  # characters when a request does not say (or the server's cap, if lower)


@dataclass
class ServeConfig:
    max_tokens_cap: int = 5000  # characters one request may ask for
    max_prompt: int = 20_000  # characters of prompt (primed in one forward pass that the whole batch waits for)
    max_rows: int = 64  # samples stepped together per model
    max_waiting: int = 64  # requests queued per model beyond a full batch
    api_key: str | None = None
    chat_template: str = DEFAULT_TEMPLATE  # one chat message in the transcript (chat.py)
    assistant_name: str = "Assistant"
    user_name: str = "User"
    system_name: str = "System"


@dataclass
class Served:
    """A loaded run and its batcher."""

    name: str
    model: CharModel
    batcher: Batcher
    facts: dict[str, Any] = field(default_factory=dict)
    chat_names: dict[str, str] = field(default_factory=dict)  # role -> speaker in chat transcripts (chat.chat_style)
    chat_template: str = ""  # one message in the transcript, from the model's alphabet where needed (chat.chat_style)


def config_of(request: Request) -> ServeConfig:
    return request.app.state.config  # type: ignore[no-any-return]


def served_of(request: Request) -> list[Served]:
    return request.app.state.served  # type: ignore[no-any-return]


def authorized(request: Request) -> None:
    """A dependency of every /v1 route: the bearer key, when the server was started with one."""
    key = config_of(request).api_key
    if key is None:
        return
    given = request.headers.get("authorization", "")
    if not (given.startswith("Bearer ") and secrets.compare_digest(given[7:].strip().encode(), key.encode())):
        raise ApiError(401, "missing or wrong API key — send the header 'Authorization: Bearer KEY'",
                       code="invalid_api_key")


def pick(request: Request, name: str | None) -> Served:
    """The run a request names (default: the first served)."""
    served = served_of(request)
    if name is None:
        return served[0]
    for s in served:
        if s.name == name:
            return s
    raise ApiError(404, f"model '{name}' is not served here — use one of: {', '.join(s.name for s in served)}", "model",
                   "model_not_found")


def check_prompt(target: Served, prompt: str, config: ServeConfig, param: str = "prompt", fix: str = "remove them") -> None:
    if len(prompt) > config.max_prompt:
        raise ApiError(400, f"{param} has {len(prompt):,} characters; this server primes at most {config.max_prompt:,}",
                       param, "prompt_too_long")
    if unknown := target.model.tokenizer.unknown_chars(prompt):
        shown = ", ".join(repr(c) for c in unknown[:10])
        raise ApiError(400, f"{param} has character(s) model '{target.name}' never saw: {shown} — {fix}",
                       param, "unknown_characters")


def check_voice(target: Served, voice: str | dict[str, float] | None) -> None:
    """A voice the run lacks, a bad blend, or a voice for a run without voices: a 400 naming the run's voices."""
    try:
        voice_of(target.model.model, voice)
    except UsageError as e:
        raise ApiError(400, str(e).removeprefix("--voice").lstrip(": ").replace("--voice", "voice"), "voice",
                       "invalid_voice") from None


def max_tokens_of(config: ServeConfig, **asked: int | None) -> int:
    """The characters a request gets: the first value it gives (each one given must be within the server's cap),
    else DEFAULT_MAX_TOKENS or the cap if that is lower."""
    for name, value in asked.items():
        if value is not None and value > config.max_tokens_cap:
            raise ApiError(400, f"{name} {value} is over this server's cap of {config.max_tokens_cap} "
                           "— ask for fewer (start the server with --max-tokens-cap to change it)", name)
    return next((v for v in asked.values() if v is not None), min(DEFAULT_MAX_TOKENS, config.max_tokens_cap))


def check_sampling(prompts: int, n: int, stops: list[str]) -> None:
    if not 1 <= prompts * n <= MAX_N:
        raise ApiError(400, f"{prompts} prompt(s) x n {n} asks for {prompts * n} completions — give 1 to {MAX_N} in all",
                       "prompt" if prompts != 1 else "n", "too_many_completions")
    if len(stops) > MAX_STOPS or any(s == "" for s in stops):
        raise ApiError(400, f"stop takes up to {MAX_STOPS} non-empty strings", "stop")


def stops_of(stop: str | list[str] | None) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop or [])


async def steering_of(target: Served, body: Sampling) -> Steering:
    """The request's steering (sample/steer.py): its character ids checked against the run's alphabet, and for
    words=known the run's training words (read from its corpus by the first request that asks)."""
    bias = {int(key): value for key, value in (body.logit_bias or {}).items()}
    vocab = target.model.tokenizer.vocab_size
    if wrong := sorted(k for k in bias if k >= vocab):
        raise ApiError(400, f"logit_bias key {wrong[0]} is not a character id of model '{target.name}' (0 to {vocab - 1}; "
                       "GET /v1/models lists its alphabet, a character's index its id)", "logit_bias", "unknown_character_id")
    steering = Steering(words=body.words, no_repeat=body.no_repeat, frequency_penalty=body.frequency_penalty,
                        presence_penalty=body.presence_penalty, logit_bias=bias)
    if body.words == "known":
        try:
            steering.lexicon = await run_in_threadpool(target.model.lexicon)
        except CharnnError as e:
            raise ApiError(400, f"words=known is not available for '{target.name}': {e}", "words",
                           "words_unavailable") from None
    return steering
