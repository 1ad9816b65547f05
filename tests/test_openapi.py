"""The OpenAPI document is the API's contract: schemathesis holds the app to it.

Schemathesis reads ``/openapi.json`` from the app (in-process, over ASGI) and sends every
operation requests generated from it, valid ones and invalid ones, with a fixed seed and a
bounded number of examples (deterministic, and quick). Every answer must be: no server
error; a status the operation declares; the declared content type and schema (errors in
the one ``{"error": {"code", "message"}}`` shape); invalid input refused with a 4xx.
Operations on one render also run against a real (cancelled) render of the tenant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from starlette.testclient import TestClient

from shotline.service import tenants
from shotline.service.server import create_app

from .service import BRIEF, service_settings

EXAMPLES = 25  # per operation and mode: about 800 requests in all, well under a minute
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance, negative_data_rejection,
          missing_required_header, ignored_auth, unsupported_method]
# Left out on purpose: positive_data_acceptance (a schema-valid body may still name an
# unknown model, or a brief that cannot be planned: 422 by design) and max_response_time.


async def public(host: str, port: int) -> list[str]:
    """A resolver for webhook URLs that never asks the network: every name is public."""
    return ["93.184.216.34"]


@pytest.fixture
def app_and_key(tmp_path: Path) -> Any:
    settings = service_settings(tmp_path / "h", allow_private_webhooks=False)
    app = create_app(settings, with_worker=False, resolver=public)
    db = app.state.service.db
    key = tenants.create_key(db, "fuzz").key
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {key}"}
        made = client.post("/v1/renders", json={"brief": BRIEF, "seconds": 4}, headers=headers)
        assert made.status_code == 202, made.text
        render_id = made.json()["id"]
        # Settled, so its event stream ends; every action on it is a clear 409.
        assert client.post(f"/v1/renders/{render_id}/cancel", headers=headers).status_code == 200
        yield app, key, render_id


def test_every_operation_keeps_to_the_openapi_document(app_and_key: Any) -> None:
    app, key, render_id = app_and_key
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    headers = {"Authorization": f"Bearer {key}"}
    failures: list[str] = []
    ran = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        runs = [{}]
        if "{render_id}" in operation.path:
            runs.append({"render_id": render_id})
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for path_parameters in runs:
                strategy = operation.as_strategy(generation_mode=mode,
                                                 path_parameters=path_parameters or None)

                @hypothesis.settings(max_examples=EXAMPLES, derandomize=True, database=None,
                                     deadline=None, phases=[Phase.explicit, Phase.generate],
                                     suppress_health_check=list(HealthCheck))
                @hypothesis.given(case=strategy)
                def call(case: schemathesis.Case) -> None:
                    # The key is sent with the call, not generated: ignored_auth then also
                    # checks that the same request without it, or with a wrong one, gets 401.
                    case.call_and_validate(headers=headers, checks=CHECKS)

                try:
                    call()
                except hypothesis.errors.Unsatisfiable:
                    assert mode == GenerationMode.NEGATIVE  # nothing in it can be made invalid
                except (Exception, BaseExceptionGroup) as exc:  # collect all: show every one
                    failures.append(f"{operation.label} ({mode}): {exc}")
                ran += 1
    assert ran >= 30, ran  # every operation ran, in both modes
    assert not failures, "\n\n".join(failures)
