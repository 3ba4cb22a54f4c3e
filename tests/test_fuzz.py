"""Schema-driven fuzzing: schemathesis generates requests from /openapi.json and runs them
in-process against the WSGI app (admin token, so requests get past authentication and
reach validation).  No 5xx, and every response must match what the document says:
its status code is documented (there is no catch-all ``default`` response), and its
content type, required headers and body conform to what is documented for that status.
Bounded: 150 examples per operation, about 80 s in all."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import ADMIN_TOKEN, bearer  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance, response_schema_conformance]
EXAMPLES = 150


def _operations(app) -> dict:
    loaded = schemathesis.openapi.from_wsgi("/openapi.json", app)
    return {op.label: op for op in (r.ok() for r in loaded.get_all_operations())}


def _labels() -> list[str]:
    # The document does not need Redis: list the operations at collection time.
    from service.app import create_app

    return sorted(_operations(create_app({"admin_token": "collect-only"})))


@pytest.fixture
def operations(app, run_jobs):
    client = app.test_client()
    admin = bearer(ADMIN_TOKEN)
    # A real project with labels and a result, so that generated requests aimed at it
    # reach the views (not only the 404 of unknown projects).
    assert client.post("/v1/projects", json={"id": "p1", "labels": ["a", "b"]}, headers=admin).status_code == 201
    labels = [[f"t{i}", f"w{j}", "ab"[(i + j) % 2]] for i in range(20) for j in range(3)]
    assert client.post("/v1/projects/p1/labels", json={"labels": labels}, headers=admin).status_code == 200
    resp = client.post("/v1/projects/p1/aggregations", json={"method": "majority_vote"}, headers=admin)
    assert resp.status_code == 202
    run_jobs()
    return _operations(app), {"project_id": "p1", "task": "t1", "worker": "w1", "job_id": resp.get_json()["job"]["id"]}


def _strategy(op, existing):
    names = {p.name for p in op.path_parameters}
    known = {k: v for k, v in existing.items() if k in names}
    if op.method.upper() == "DELETE":
        known = {}  # deleting the fixture project would starve the other examples
    modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    strategies = [op.as_strategy(m) for m in modes]
    if known:
        strategies += [op.as_strategy(m, path_parameters=known) for m in modes]
    return st.one_of(strategies)


@pytest.mark.parametrize("label", _labels())
def test_api_conforms_to_its_openapi_document(operations, label):
    ops, existing = operations
    op = ops[label]

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
    @given(case=_strategy(op, existing))
    def run(case):
        case.call_and_validate(headers=bearer(ADMIN_TOKEN), checks=CHECKS)

    run()
