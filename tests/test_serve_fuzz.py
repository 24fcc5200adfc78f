"""The schema fuzzer: schemathesis generates requests from the live server's own OpenAPI schema.

Bounded (a fixed number of cases per operation, a timeout per request, loopback only); it fails on
any 5xx, any status the schema does not document for that operation, a wrong content type or a
missing documented header. The server caps completions at a few characters so the cases stay fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    status_code_conformance,
)

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
        @settings(max_examples=CASES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None, phases=[Phase.explicit, Phase.generate])
        def fuzz(case: schemathesis.Case) -> None:
            response = case.call(base_url=fuzzed.url, timeout=30)
            statuses.append(response.status_code)
            case.validate_response(response, checks=CHECKS)

        fuzz()
    assert len(statuses) >= 3 * CASES_PER_OPERATION and 200 in statuses and 400 in statuses, sorted(set(statuses))
