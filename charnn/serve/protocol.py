"""The wire protocol: request bodies, OpenAI's error shape, and the statuses every route documents.

Every error a client can cause is a 4xx with `{"error": {"message", "type", "param", "code"}}`;
an engine-side failure is a 500 or 503 in the same shape. The OpenAPI schema lists each of them
for every route (`responses_for`), so a client generated from the schema knows all the answers.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from annotated_types import Ge, Le
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
)

from charnn.errors import CharnnError, GenerationError
from charnn.serve.batcher import Busy, Unavailable

MAX_N = 16
MAX_STOPS = 4
SEED_LIMIT = 2**53  # seeds below it; a JSON Schema validator compares numbers as doubles, exact up to 2**53


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers


KINDS = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error", 405: "invalid_request_error",
         413: "request_too_large", 500: "server_error", 503: "server_busy"}


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    kind = KINDS.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def as_api_error(error: BaseException) -> ApiError:
    """An engine-side failure as the answer its cause deserves: the client's mistake 400, the model's 500."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, CharnnError) and not isinstance(error, GenerationError):
        return ApiError(400, str(error))
    if isinstance(error, Unavailable):
        return ApiError(503, f"{error} — retry later", code="engine_unavailable")
    if isinstance(error, Busy):
        return ApiError(503, f"the server is busy ({error}) — retry in a second", headers={"Retry-After": "1"})
    detail = str(error) or type(error).__name__
    return ApiError(500, f"generation failed: {detail} — other requests are unaffected; retry, or report it",
                    code="generation_failed")


# ---- the documented answers ----------------------------------------------------------------------


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


_WHY = {400: "The request is malformed or names a bad value (the message says which and how to fix it).",
        401: "Missing or wrong API key (only when the server was started with --api-key).",
        404: "The model is not served here.",
        405: "The method is not allowed on this path (see the Allow header).",
        413: "The request body is over 1 MiB.",
        500: "Generation failed inside the model; other requests are unaffected.",
        503: "The server is busy (retry after the Retry-After header) or the model's engine is down."}


def responses_for(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for these error statuses, in OpenAI's error shape."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": ErrorResponse, "description": _WHY[status]}
        if status == 503:
            entry["headers"] = {"Retry-After": {"schema": {"type": "string"}, "description": "Seconds to wait."}}
        if status == 405:
            entry["headers"] = {"Allow": {"schema": {"type": "string"}, "description": "The methods allowed."}}
        out[status] = entry
    return out


ALWAYS = (400, 405, 413, 500)  # any route: bad input, wrong method, big body, an unexpected failure
GENERATING = (*ALWAYS, 401, 404, 503)


# ---- request bodies ------------------------------------------------------------------------------
# Strict types: a field takes exactly what the schema says (no "5" for 5, no 0 for false), except that a
# whole float (6.0) is an integer, as JSON Schema counts it. Limits that depend on the server's options
# (max_tokens' cap, a prompt's length) are written into the schema by app._schema.


def _whole(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value


Whole = Annotated[StrictInt, BeforeValidator(_whole)]
# Optional integers carry their bounds inside (a Field bound on `X | None` would not reach the schema as one).
Count = Annotated[StrictInt, Ge(0), BeforeValidator(_whole)]
TopK = Annotated[StrictInt, Ge(1), Le(1_000_000), BeforeValidator(_whole)]
Seed = Annotated[StrictInt, Ge(0), Le(SEED_LIMIT - 1), BeforeValidator(_whole)]
TextTop = Annotated[StrictInt, Ge(0), Le(5), BeforeValidator(_whole)]
ChatTop = Annotated[StrictInt, Ge(0), Le(20), BeforeValidator(_whole)]
Number = StrictFloat
Text = StrictStr
Flag = StrictBool
Stop = Annotated[Text, Field(min_length=1)]
Weight = Annotated[StrictFloat, Field(ge=0, le=1)]  # strict floats take JSON integers too (0, 1)
Penalty = Annotated[StrictFloat, Field(ge=-2, le=2)]
CHAR_ID = r"^(0|[1-9][0-9]{0,5})$"  # a character id as a string, as OpenAI's logit_bias keys are token ids
CharId = Annotated[StrictStr, StringConstraints(pattern=CHAR_ID)]
Bias = Annotated[StrictFloat, Field(ge=-100, le=100)]
NoRepeat = Annotated[StrictInt, Ge(2), Le(100_000), BeforeValidator(_whole)]
Voice = Annotated[Text, Field(min_length=1)] | Annotated[dict[Text, Weight], Field(min_length=1, max_length=255)]
# What a field of several shapes takes, for the 400 when a value fits none of them.
UNION_FIELDS = {"stop": f"stop takes up to {MAX_STOPS} non-empty strings (a string or a list)",
                "prompt": f"prompt takes a string or a list of 1 to {MAX_N} strings",
                "voice": "voice takes a voice's name or {name: weight, ...} with weights in [0, 1] summing to 1"}
# A chat template: {content} exactly once, {name} only before it, and something besides {content} to end a reply at.
TEMPLATE_PATTERN = r"^(?!\{content\}(?![\s\S]))(?:(?!\{content\})[\s\S])*\{content\}(?:(?!\{content\}|\{name\})[\s\S])*(?![\s\S])"


class Sampling(BaseModel):
    """Settings shared by completions and chat. A field not listed here is a 400 naming it (additionalProperties
    false): an option a client sends is either honoured or refused, never ignored."""

    model_config = ConfigDict(extra="forbid")

    model: Text | None = Field(None, description="A run name (GET /v1/models); default: the first served run.")
    max_tokens: Count | None = Field(None, description="Characters to generate per completion: at most the "
                                     "server's cap (--max-tokens-cap); default 200, or the cap if it is lower.")
    temperature: Number = Field(0.8, ge=0, le=10, description="Softmax temperature; 0 is greedy.")
    top_p: Number | None = Field(None, gt=0, le=1)
    top_k: TopK | None = Field(None, description="charnn extension: sample among the K most likely.")
    n: Whole = Field(1, ge=1, le=MAX_N, description=f"Completions per prompt ({MAX_N} at most in all).")
    stop: Stop | Annotated[list[Stop], Field(max_length=MAX_STOPS)] | None = Field(
        None, description=f"Up to {MAX_STOPS} strings; a completion ends before the first.")
    seed: Seed | None = None
    stream: Flag = False
    stream_options: StreamOptions | None = Field(None, description="With stream: include_usage sends a last chunk "
                                                 "with usage and no choices.")
    user: Text | None = None
    voice: Voice | None = Field(None, description="charnn extension: a voiced run's voice (GET /v1/models lists "
                                "each run's `voices`): a name, or a blend {name: weight, ...} whose weights sum to 1.")
    frequency_penalty: Penalty = Field(0.0, description="Lower a character's score by this times the times this "
                                       "completion already wrote it together with the 7 characters before it (OpenAI "
                                       "counts tokens; a single character is too small a unit to count).")
    presence_penalty: Penalty = Field(0.0, description="Lower a character's score by this where this completion "
                                      "already wrote it together with the 7 characters before it.")
    logit_bias: Annotated[dict[CharId, Bias], Field(max_length=1024)] | None = Field(
        None, json_schema_extra={"propertyNames": {"pattern": CHAR_ID}},
        description="Character id (a string: GET /v1/models lists each run's `alphabet`, whose index is the id) "
        "-> a value from -100 to 100 added to that character's score; -100 bans it.")
    words: Literal["any", "known"] = Field("any", description="charnn extension: known writes only words that occur in "
                                           "the run's training text (case ignored; needs its corpus on the server).")
    no_repeat: NoRepeat | None = Field(None, description="charnn extension: no N-character string twice in a "
                                       "completion; one left nothing to write ends (finish_reason stop).")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: Flag = False


class CompletionRequest(Sampling):
    prompt: Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_N)] = Field(
        "\n", description="Text to continue; a list gives `n` completions each.")
    originality: Flag = Field(False, description="charnn extension: give each choice an `originality` object: the "
                              "spans of its text copied verbatim from the training text, the copied fraction, the "
                              "longest copy and where it is (needs the run's corpus on the server; streamed: with "
                              "the choice's last chunk).")
    min_copy: Whole = Field(20, ge=1, le=100_000, description="charnn extension: with originality, the shortest span "
                          "that counts as copied, in characters.")
    logprobs: TextTop | None = Field(None, description="Give each choice a `logprobs` object: every "
                                 "character's log-probability under the model (before temperature and filtering) and "
                                 "that many of the most likely characters at each position (tokens are characters).")
    echo: Literal[False] = Field(False, description="Not supported: the prompt is never echoed (true is a 400).")


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[ContentPart] = Field(..., description="Text, or a list of text parts.")
    name: Text | None = Field(None, max_length=64, description="The speaker's name in the transcript (default: by role).")

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ContentPart(BaseModel):
    type: Literal["text"]
    text: Text


class ChatRequest(Sampling):
    model_config = ConfigDict(regex_engine="python-re", extra="forbid")  # the template's pattern looks ahead

    messages: list[Message] = Field(..., min_length=1, description="The conversation so far.")
    max_completion_tokens: Count | None = Field(None, description="Preferred over max_tokens when given.")
    template: Text | None = Field(None, pattern=TEMPLATE_PATTERN, description="charnn extension: how one message reads "
                                  "in the transcript: {content} once, {name} (the speaker) before it, and text to end "
                                  "a reply at (default: the server's, '{name}:\\n{content}\\n\\n').")
    assistant_name: Text | None = Field(None, max_length=64, description="charnn extension: the name the model speaks as.")
    user_name: Text | None = Field(None, max_length=64, description="charnn extension: the name of user messages.")
    logprobs: Flag = Field(False, description="Give each choice a `logprobs` object: every character's "
                           "log-probability under the model (before temperature and filtering).")
    top_logprobs: ChatTop | None = Field(None, description="With logprobs (true): also that many of the most "
                                       "likely characters at each position.")


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Text | None = None
    text: Text = Field(..., min_length=2, description="Text to score (2 characters or more the model knows).")
    voice: Voice | None = Field(None, description="charnn extension: score it as written in this voice (or blend).")


Sampling.model_rebuild()
CompletionRequest.model_rebuild()
ChatRequest.model_rebuild()
Message.model_rebuild()
