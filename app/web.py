"""The Flask app factory: one app over the models, its protocols and its page.

Gunicorn imports this module (`wsgi_app`) only after gunicorn.conf.py has chosen the
prometheus multiprocess folder, so it may import the adapters, and through them
prometheus_client, at the top.
"""

from __future__ import annotations

from flask import Flask

from app import security, ui
from app.adapters import routes
from app.adapters.raw_predict import RawPredict
from app.core.verbs import Core
from app.engine import Engine
from app.json_provider import OrjsonProvider
from app.repository.registry import Registry
from app.settings import Settings


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> Flask:
    """Build the Flask app; load the models (app.repository) unless an engine is given, which
    is then the one model served. Nothing starts here."""
    settings = settings or Settings.from_env()
    registry = Registry([engine], settings) if engine is not None else Registry.load(settings)
    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    # A multipart text field may hold a whole base64 image (TorchServe's clients send one):
    # the upload limit bounds it, not Flask's 500 kB default for form fields.
    app.config["MAX_FORM_MEMORY_SIZE"] = settings.max_upload_bytes
    app.extensions["wanwu.settings"] = settings
    app.extensions["wanwu.registry"] = registry
    app.extensions["wanwu.core"] = core = Core(registry, settings)
    routes.init_app(app)
    ui.init_app(app)
    security.init_app(app)
    app.wsgi_app = RawPredict(app, core)  # the hot path, around Flask's own
    return app
