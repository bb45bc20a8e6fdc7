"""wanwu's own explanation route: POST /explain, with /predict's bodies and parameters.

Policy: each image's heatmaps (app/explain.py) of its top class, of its top `topk` (default
1), or of the one class `target` names (an index or a label); both `topk` and `target` is a
422. One image answers `explanations`, several `results` naming each file's, as /predict.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from app import errors, explain, openapi
from app.adapters import common, context, rest
from app.model import Classifier

bp = Blueprint("explanations", __name__)


@bp.post("/explain")
def explain_images() -> Any:
    """Explain one or more images: each one's heatmap of its top class, its top `topk`, or
    the class `target` names."""
    context.authorize()
    engine = context.lease(request.args.get("model"), request.args.get("version"))
    classifier = engine.classifier
    k, lang = rest.query_params(classifier, explain.TOPK_DEFAULT)
    index = context.target(classifier)
    if index is not None and "topk" in request.args:
        raise errors.InvalidParameter("Give target (one class) or topk (the top k), not both.")
    images = rest.uploads()
    result = context.explained(images, engine)
    answers = common.explanations(result, classifier, k, index, lang)
    return rest.answer("explanations", images, answers, classifier, result.timing_ms)


def openapi_paths(classifier: Classifier) -> tuple[openapi.Paths, openapi.Schemas]:
    """/explain: /predict's parameters and bodies, `target`, and the explanations' shape."""
    predict = rest.openapi_paths(classifier)[0]["/predict"]["post"]
    topk, *others = predict["parameters"]
    explanations = {"type": "array", "items": {"$ref": "#/components/schemas/Explanation"}}
    result = {
        "model": {"$ref": "#/components/schemas/Model"},
        "timing_ms": {"$ref": "#/components/schemas/Timing"},
    }
    operation = {
        "summary": "Explain one or more images: a class heatmap (Grad-CAM) for each.",
        "description": "The same bodies and parameters as /predict; `topk` defaults to 1, "
        "and `target` names one class instead. `explanations` for one image, `results` "
        "for several.",
        "parameters": [
            {**topk, "schema": {**topk["schema"], "default": explain.TOPK_DEFAULT}},
            openapi.TARGET,
            *others,
        ],
        "requestBody": predict["requestBody"],
        "responses": {
            **predict["responses"],
            "200": openapi.json_response(
                "Each image's explanations.",
                {
                    "type": "object",
                    "required": ["model", "timing_ms"],
                    "properties": {
                        "explanations": explanations,
                        "results": {"type": "array", "items": openapi.OPEN},
                        **result,
                    },
                },
            ),
            "422": openapi.error("topk, target or lang out of range, or both topk and target."),
            "501": openapi.error("The model cannot be explained; the message says why."),
        },
    }
    return {"/explain": {"post": operation}}, {}
