"""The OpenAPI document matches the app: schemathesis drives every endpoint with generated data."""

from __future__ import annotations

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from benchkit.images import image_bytes


@pytest.fixture
def api_schema(start_app):
    """The app's own /openapi.json, bound to the app for in-process calls."""
    return schemathesis.openapi.from_wsgi("/openapi.json", start_app())


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/predict", "POST"),
        ("/healthz", "GET"),
        ("/readyz", "GET"),
        ("/v1/model", "GET"),
        ("/metrics", "GET"),
        ("/openapi.json", "GET"),
        ("/", "GET"),
        ("/predictions/{model_name}", "PUT"),
        ("/predictions/{model_name}/{version}", "POST"),
        ("/ping", "GET"),
        ("/v2", "GET"),
        ("/v2/health/ready", "GET"),
        ("/v2/models/{model_name}", "GET"),
        ("/v2/models/{model_name}/versions/{version}/ready", "GET"),
        ("/v2/models/{model_name}/infer", "POST"),
    ],
)
def test_every_response_conforms_and_none_is_a_5xx(api_schema, path, method):
    operation = api_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case):
        # A schema cannot say "a decodable image": random bytes that fit it are rightly refused.
        response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
        assert response.status_code < 500 or response.status_code in (503, 504)

    check()


def test_the_document_lists_every_route_of_the_inference_port(client):
    document = client.get("/openapi.json").get_json()
    routes = {
        re.sub(r"<(\w+)>", r"{\1}", rule.rule)  # Flask's <name> is OpenAPI's {name}
        for rule in client.application.url_map.iter_rules()
        # The management API answers on its own port only (app.adapters.management).
        if rule.endpoint != "static" and not rule.endpoint.startswith("management.")
    }
    assert routes == set(document["paths"])


def test_a_real_image_conforms_to_the_200_schema(api_schema, client):
    operation = api_schema["/predict"]["POST"]
    response = client.post("/predict", data=image_bytes(), content_type="image/jpeg")
    operation.validate_response(response)
