"""The browser upload page at /."""

from __future__ import annotations

from flask import Blueprint, Flask, current_app, render_template

bp = Blueprint("ui", __name__)


@bp.get("/")
def index() -> str:
    """Render the upload page, with a banner when the model is untrained."""
    engine = current_app.extensions["wanwu.engine"]
    return render_template("index.html", model=engine.classifier.info())


def init_app(app: Flask) -> None:
    """Register the page."""
    app.register_blueprint(bp)
