"""wanwu (万物识别): an image-classification service."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from app.engine import Engine
    from app.settings import Settings

log = logging.getLogger("wanwu")


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> Flask:
    """Build the Flask app; load the model unless an engine is given. Nothing starts here."""
    # Imported here, not at module level: gunicorn.conf.py must choose the metrics
    # directory before prometheus_client is first imported.
    from flask import Flask

    from app import adapters, security, ui
    from app.core import Core
    from app.engine import Engine
    from app.model import Classifier
    from app.settings import Settings

    settings = settings or Settings.from_env()
    if engine is None:
        engine = Engine(Classifier.load(settings.model), settings)
        if not engine.classifier.trained:
            log.warning(
                "UNTRAINED MODEL: %s holds seeded random weights; predictions are meaningless",
                settings.model,
            )
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.json.ensure_ascii = False  # Chinese labels as text, not \u escapes
    app.extensions["wanwu.settings"] = settings
    app.extensions["wanwu.engine"] = engine
    app.extensions["wanwu.core"] = Core(engine, settings)
    adapters.init_app(app)
    ui.init_app(app)
    security.init_app(app)
    return app
