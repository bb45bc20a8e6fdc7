"""The request core on its own: no web framework imported, none needed to classify."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from app import errors
from app.core.types import Upload
from app.core.verbs import Core
from app.engine import Engine
from app.model import Classifier
from app.repository.registry import Registry
from benchkit.images import image_bytes
from tests.conftest import ROOT, make_settings


def test_the_core_imports_no_web_framework():
    code = "import sys, app.core.verbs; print(sorted({'flask', 'werkzeug'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_the_grpc_adapter_and_the_intake_import_no_flask_and_no_blueprint():
    code = (
        "import sys, app.adapters.grpc, app.intake.worker; "
        "print(sorted({'flask', 'werkzeug', 'app.adapters.routes'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_the_core_classifies_uploads_and_checks_keys(tiny_model_path):
    settings = make_settings(tiny_model_path, api_keys=("k",))
    engine = Engine(Classifier.load(settings.model), settings)
    core = Core(Registry([engine], settings), settings)
    with pytest.raises(errors.NotReady):
        core.require_ready()
    engine.start()
    try:
        assert engine.batcher.ready.wait(30)
        core.require_ready()
        core.authorize("Bearer k", "test")
        with pytest.raises(errors.Unauthorized):
            core.authorize("Bearer nope", "test")
        with pytest.raises(errors.ModelNotFound):
            core.model("other")
        uploads = [Upload(image_bytes(seed=s), f"{s}.jpg") for s in range(2)]
        result = core.classify(uploads, time.monotonic())
        assert [p.shape for p in result.probs] == [(1000,), (1000,)]
        assert 1 <= result.batch_size <= 2 and result.timing_ms["total"] > 0
        with pytest.raises(errors.UndecodableImage) as refused:
            core.classify([Upload(image_bytes()[:300], "bad.jpg")], time.monotonic())
        assert refused.value.message.startswith("bad.jpg: ")
    finally:
        engine.stop(10)


def test_every_route_asks_the_one_readiness_rule(tiny_model_path):
    from app.web import create_app

    settings = make_settings(tiny_model_path)
    engine = Engine(Classifier.load(settings.model), settings)
    client = create_app(settings, engine).test_client()
    routes = ("/ping", "/readyz", "/v2/health/ready", "/v2/models/tiny/ready")
    assert [client.get(r).status_code for r in routes] == [503] * 4
    assert all(client.get(r).headers["Retry-After"] == "1" for r in routes)
    assert client.get("/v1/model").get_json()["ready"] is False
    engine.start()
    try:
        assert engine.batcher.ready.wait(30)
        assert [client.get(r).status_code for r in routes] == [200] * 4
        assert client.get("/v1/model").get_json()["ready"] is True
    finally:
        engine.stop(10)
