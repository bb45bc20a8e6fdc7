"""The OpenAPI 3 document served at /openapi.json: shared schemas, helpers and the merge.

Each protocol adapter in app/adapters/ describes its own routes next to them (its `openapi`
function returns its paths and schemas); `spec` merges them with what is shared: wanwu's
error shape, the model description, and the routes that are no protocol's (the upload page,
this document).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from app import errors

if TYPE_CHECKING:
    from app.model import Classifier

Paths = dict[str, Any]
Schemas = dict[str, Any]

ERROR = {"$ref": "#/components/schemas/Error"}
RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}}
}
OPEN = {"type": "object"}
BINARY = {"schema": {"type": "string", "format": "binary"}}

SCHEMAS: Schemas = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {
                        "type": "string",
                        "enum": sorted(
                            {
                                cls.code
                                for cls in vars(errors).values()
                                if isinstance(cls, type) and issubclass(cls, errors.ApiError)
                            }
                            | {"bad_request"}
                        ),
                    },
                    "message": {"type": "string"},
                },
            }
        },
    },
    "Model": {
        "type": "object",
        "required": ["name", "version", "trained"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string", "description": "Artifact SHA-256 prefix."},
            "trained": {
                "type": "boolean",
                "description": "False: seeded random weights, labels meaningless.",
            },
        },
    },
    "Explanation": {
        "type": "object",
        "required": ["index", "label", "score", "heatmap", "overlay", "box"],
        "properties": {
            "index": {"type": "integer", "minimum": 0},
            "label": {"type": "string"},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "heatmap": {
                "type": "array",
                "description": "Grad-CAM in [0, 1]: rows of the feature map's grid over the crop.",
                "items": {"type": "array", "items": {"type": "number"}},
            },
            "overlay": {
                "type": "string",
                "description": "PNG data URL: the heatmap over the crop.",
            },
            "box": {
                "type": "array",
                "description": "The crop in the upload's pixels: left, top, right, bottom.",
                "items": {"type": "number"},
                "minItems": 4,
                "maxItems": 4,
            },
        },
    },
}

# The class an explanation route explains, instead of the top one.
TARGET = {
    "name": "target",
    "in": "query",
    "description": "A class index or label to explain (absent: the most probable class).",
    "schema": {"type": "string"},
}

# What each error status means on a route that classifies, whatever the protocol's shape.
_STATUSES = {
    400: "Malformed request, or no image, or a corrupt one.",
    401: "WANWU_API_KEYS is set and no valid bearer key was sent.",
    404: "No model by that name or version.",
    413: "Body, image count or pixel count over its limit.",
    415: "Not a supported image type, or a compressed body.",
    422: "A parameter is out of range.",
    500: "The model failed; the error was logged.",
    501: "The model cannot be explained; the message says why.",
    503: "Not ready, or overloaded.",
    504: "The request waited longer than WANWU_TIMEOUT_MS.",
}


def error(
    description: str, headers: dict[str, Any] | None = None, schema: dict[str, Any] = ERROR
) -> dict[str, Any]:
    """An error response in `schema`'s shape (wanwu's by default)."""
    response = json_response(description, schema)
    if headers:
        response["headers"] = headers
    return response


def json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON response with `schema`."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    """A required JSON request body with `schema`."""
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def path_params(*names: str) -> list[dict[str, Any]]:
    """Required string path parameters."""
    return [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
    ]


def errors_in(schema: dict[str, Any], *statuses: int) -> dict[str, Any]:
    """The error responses of a protocol route, in that protocol's shape."""
    return {
        str(status): error(_STATUSES[status], RETRY_AFTER if status == 503 else None, schema)
        for status in statuses
    }


def get(
    summary: str, responses: dict[str, Any], parameters: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A GET operation answering an open JSON object, with these error `responses`."""
    operation = {"summary": summary, "responses": {"200": json_response("OK.", OPEN), **responses}}
    if parameters:
        operation["parameters"] = parameters
    return {"get": operation}


def image_body(*fields: str, required: bool, other: dict[str, Any] | None = None) -> dict[str, Any]:
    """A request body of images: multipart `fields` of files, or the raw image; `other`
    adds other media types and their schemas."""
    files = {"type": "array", "items": {"type": "string", "format": "binary"}}
    multipart: dict[str, Any] = {"type": "object", "properties": {f: files for f in fields}}
    if required:
        multipart["required"] = list(fields)
    return {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": multipart},
            "image/*": BINARY,
            "application/octet-stream": BINARY,
            **(other or {}),
        },
    }


def spec(classifier: Classifier, parts: Iterable[tuple[Paths, Schemas]]) -> dict[str, Any]:
    """The document for the model this worker serves, from each adapter's (paths, schemas)."""
    trained = "" if classifier.trained else ", UNTRAINED: seeded random weights"
    paths: Paths = {
        "/openapi.json": get("This document (OpenAPI 3.1).", {}),
        "/": {
            "get": {
                "summary": "The upload page.",
                "responses": {"200": {"description": "HTML page.", "content": {"text/html": {}}}},
            }
        },
    }
    schemas = dict(SCHEMAS)
    for part_paths, part_schemas in parts:
        paths.update(part_paths)
        schemas.update(part_schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "wanwu",
            "version": "1",
            "description": (
                f"万物识别: image classification. Model {classifier.name} "
                f"({classifier.arch or classifier.format}, {classifier.num_classes} classes, "
                f"labels in {', '.join(classifier.languages)}{trained})."
            ),
            "x-model": {
                **classifier.info(),
                "classes": classifier.num_classes,
                "languages": list(classifier.languages),
            },
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
