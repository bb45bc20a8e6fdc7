"""The browser upload page at /."""

from __future__ import annotations

import math

from flask import Blueprint, Flask, current_app, render_template, request

from app import imaging
from app.core.verbs import require_images

bp = Blueprint("ui", __name__)


@bp.get("/")
def index() -> str:
    """Render the upload page for `?model=NAME` (the default model when absent), with a
    banner when that model is untrained and a choice of model when several are served (the
    image models: a Triton model, which takes tensors, is a 400)."""
    core = current_app.extensions["wanwu.core"]
    engine, settings = core.model(request.args.get("model")), core.settings
    require_images(engine)
    limits = {
        "max_mb": f"{settings.max_upload_mb:g}",
        "max_bytes": settings.max_upload_bytes,
        "max_files": settings.max_files,
        "formats": imaging.FORMAT_NAMES,
        # The page downsizes large photos to the short side the fast decode path keeps.
        "send_short_side": math.ceil(
            imaging.short_side(engine.classifier.input_spec) * imaging.FAST_MARGIN
        ),
    }
    classifier = engine.classifier
    model = {
        **classifier.info(),
        "arch": classifier.arch,
        "classes": classifier.num_classes,
        "languages": ",".join(classifier.languages),
    }
    served = [e.classifier.name for e in core.registry.served() if e.classifier.input_spec]
    return render_template("index.html", model=model, limits=limits, served=served)


def init_app(app: Flask) -> None:
    """Register the page."""
    app.register_blueprint(bp)
