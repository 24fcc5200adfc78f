"""The schema fuzzer: schemathesis generates requests from the live server's own OpenAPI schema.

Bounded (a fixed number of cases per operation, a timeout per request, loopback only); it fails on
any 5xx, any status the schema does not document for that operation, a wrong content type or a
missing documented header. The server caps completions at a few characters so the cases stay fast.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup
from schemathesis.core.transport import Response

from charnn.serve import ServeConfig
from tests.conftest import Server

CASES_PER_OPERATION = 100
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance]


@pytest.fixture(scope="module")
def fuzzed(run_root: Path) -> Iterator[Server]:
    s = Server(run_root / "checkpoints", ServeConfig(max_tokens_cap=64, max_prompt=2000))
    yield s
    s.stop()


@pytest.mark.slow
def test_no_request_the_schema_allows_breaks_the_server(fuzzed: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzzed.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/completions", "/v1/chat/completions", "/v1/score", "/health"}
    statuses: list[int] = []
    for operation in operations:

        @given(operation.as_strategy())
        @settings(max_examples=CASES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None, phases=[Phase.explicit, Phase.generate])
        def fuzz(case: schemathesis.Case) -> None:
            response = case.call(base_url=fuzzed.url, timeout=30)
            statuses.append(response.status_code)
            case.validate_response(response, checks=CHECKS)

        fuzz()
    assert len(statuses) >= 3 * CASES_PER_OPERATION and 200 in statuses and 400 in statuses, sorted(set(statuses))


STRICT = [*CHECKS, response_schema_conformance, positive_data_acceptance, negative_data_rejection]
# Refusals the schema cannot state, each a deliberate exception with its own error code:
EXCEPTIONS = {
    "unknown_characters": "characters the model never saw: the alphabet is the model's, not the schema's",
    "too_many_completions": "prompts x n at most 16 in all: a bound across two fields",
    "top_logprobs_without_logprobs": "top_logprobs needs logprobs true: a rule across two fields (OpenAI's too)",
    "prompt_too_long": "a chat's transcript (messages, names and template together) over the server's prompt limit",
    "invalid_voice": "the voices are the run's, not the schema's: a name it lacks, weights that do not sum to 1",
    "unknown_character_id": "logit_bias keys are the run's character ids: how many it has is the run's, not the schema's",
}


def deliberate(response: Response) -> bool:
    try:
        return response.status_code == 400 and response.json()["error"]["code"] in EXCEPTIONS
    except (ValueError, KeyError, TypeError):
        return False


def is_stream(response: Response) -> bool:
    return any(v.startswith("text/event-stream") for v in response.headers.get("content-type", []))


def event_failures(operation: schemathesis.APIOperation, response: Response) -> list[str]:
    """Each streamed chunk against the event's documented contentSchema (schemathesis checks the event's shape,
    `data` a string; what the string holds is an annotation JSON Schema validators do not check)."""
    if not is_stream(response):
        return []
    event = operation.definition.raw["responses"]["200"]["content"]["text/event-stream"]["schema"]
    chunk = next(option for option in event["properties"]["data"]["anyOf"] if "contentSchema" in option)
    validator = jsonschema_rs.validator_for(chunk["contentSchema"])
    data = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    problems = [] if data and data[-1] == "[DONE]" else ["the stream does not end with data: [DONE]"]
    for chunk in data[:-1]:
        try:
            validator.validate(json.loads(chunk))
        except (ValueError, jsonschema_rs.ValidationError) as e:
            problems.append(f"{operation.path} event {chunk[:120]!r}: {str(e)[:200]}")
    return problems


def strict_fuzz(operation: schemathesis.APIOperation, mode: GenerationMode, url: str, failures: list[str],
                answered: list[int]) -> None:
    @given(operation.as_strategy(generation_mode=mode))
    @settings(max_examples=CASES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
              database=None, phases=[Phase.explicit, Phase.generate])
    def fuzz(case: schemathesis.Case) -> None:
        response = case.call(base_url=url, timeout=30)
        answered.append(-response.status_code if is_stream(response) else response.status_code)
        failures.extend(event_failures(operation, response))
        try:
            case.validate_response(response, checks=STRICT)
        except FailureGroup as group:  # collected, so one run shows every kind of failure
            if not deliberate(response):
                failures.extend(f"{operation.path} {response.status_code}: {e.title} — {response.text[:160]} — {case.body!r:.300}"
                                for e in group.exceptions)

    fuzz()


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_schema_tells_the_whole_truth(fuzzed: Server, mode: GenerationMode) -> None:
    """Every check schemathesis has, in both directions: what the schema allows is answered 2xx (or a listed
    deliberate exception), what it forbids is a 4xx, and every answer, streamed events included, is as documented."""
    schema = schemathesis.openapi.from_url(f"{fuzzed.url}/openapi.json")
    failures: list[str] = []
    answered: list[int] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        try:
            strict_fuzz(operation, mode, fuzzed.url, failures, answered)
        except Unsatisfiable:  # an operation with no input to break (GET /health) has no negative cases
            assert mode == GenerationMode.NEGATIVE and operation.method.upper() == "GET"
    assert not failures, "\n".join(sorted(set(failures))[:20])
    assert len(answered) >= 3 * CASES_PER_OPERATION
    if mode == GenerationMode.POSITIVE:  # streams were among the answers checked (negative: status -200)
        assert -200 in answered and 200 in answered, sorted(set(answered))
