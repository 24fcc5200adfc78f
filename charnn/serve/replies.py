"""What the routes answer: the 200 bodies and the streamed chunks, as the OpenAPI schema documents them.

The routes build plain dicts (fast, and shaped exactly like OpenAI's); these models only describe them,
so a client generated from `/openapi.json` knows every field, and the strict schema fuzz
(tests/test_serve_fuzz.py) checks each answer against its description. A streamed answer is documented
per event (OpenAPI 3.1: the media type's schema describes one server-sent event): `data` holds one chunk
as JSON (its `contentSchema`), an error object, or the closing `[DONE]`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from charnn.serve.protocol import ErrorResponse

Finish = Literal["length", "stop"] | None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class TextLogprobs(BaseModel):
    tokens: list[str] = Field(..., description="The characters of the text, one per entry.")
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] = Field(..., description="At each position, the most likely characters.")
    text_offset: list[int] = Field(..., description="Each character's offset in prompt + completion.")


class Longest(BaseModel):
    start: int
    length: int
    text: str
    where: str | None = None


class Originality(BaseModel):
    min_copy: int
    generated: int
    copied: int
    copied_fraction: float
    spans: list[list[int]] = Field(..., description="[start, end) of each copied span in the choice's text.")
    longest: Longest | None


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: TextLogprobs | None
    finish_reason: Finish = Field(..., description="null in a streamed chunk before the choice's last.")
    originality: Originality | None = Field(None, description="With `originality` true (streamed: on the last chunk).")


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = Field(None, description="Always in a whole answer; in a stream only the usage chunk's.")


class TokenLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class ContentLogprob(TokenLogprob):
    top_logprobs: list[TokenLogprob]


class ChatLogprobs(BaseModel):
    content: list[ContentLogprob]
    refusal: None = None


class ChatMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatMessage
    logprobs: ChatLogprobs | None
    finish_reason: Finish


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = Field(None, description="On each choice's first chunk.")
    content: str | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None
    finish_reason: Finish


class ChatChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class Score(BaseModel):
    object: Literal["score"]
    model: str
    characters: int
    nats: float
    bits_per_character: float
    perplexity: float
    unknown_characters: int
    unknown: dict[str, int] = Field(..., description="Characters the model never saw (skipped), with their counts.")


class ModelEntry(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    charnn: dict[str, Any] = Field(..., description="The run: cell, size, vocabulary, step, best validation loss, "
                                   "chat_names and chat_template, and `alphabet`: its characters, each at the index "
                                   "that is its id (logit_bias's keys).")


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelEntry]


class EngineLoad(BaseModel):
    rows: int
    waiting: int
    alive: bool


class Health(BaseModel):
    status: Literal["ok", "unhealthy"]
    models: dict[str, EngineLoad]


def streamed(chunk: type[BaseModel], whole: type[BaseModel], what: str) -> dict[int | str, dict[str, Any]]:
    """The 200 entry of a route that answers JSON, or (with `stream`) server-sent events of `chunk`s."""
    # Written out in place, without $refs: a "#/$defs/..." inside the OpenAPI document points at the document's
    # root, where no $defs are, so a client generated from it (or a fuzzer) could not follow it.
    chunk_data = {"type": "string", "contentMediaType": "application/json",
                  "contentSchema": {"anyOf": [inlined(chunk.model_json_schema()),
                                              inlined(ErrorResponse.model_json_schema())]}}
    data = {"anyOf": [chunk_data, {"const": "[DONE]"}],
            "description": f"One {what} as JSON; an error object if generation fails mid-stream; `[DONE]` last "
                           "(not JSON: the stream's end, as OpenAI's)."}
    event = {"type": "object", "required": ["data"], "additionalProperties": False,
             "properties": {"data": data, "event": {"const": "message"}, "id": {"type": "string"},
                            "retry": {"type": "integer"}}}
    return {200: {"model": whole, "description": f"The answer; with `stream` true, server-sent events "
                  f"(`data: {{{what}}}` lines, then `data: [DONE]`).",
                  "content": {"text/event-stream": {"schema": event}}}}


def inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON schema with every `#/$defs/NAME` reference replaced by the definition (none is recursive)."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) >= {"$ref"} and str(node["$ref"]).startswith("#/$defs/"):
                extra = {k: v for k, v in node.items() if k != "$ref"}
                return {**resolve(defs[node["$ref"].split("/")[-1]]), **extra}
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)  # type: ignore[no-any-return]
