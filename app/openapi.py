"""The OpenAPI 3 description of every endpoint, served at /openapi.json."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from app import errors, imaging
from app.adapters import common

if TYPE_CHECKING:
    from app.model import Classifier

_ERROR = {"$ref": "#/components/schemas/Error"}
_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}}
}


def _error(
    description: str, headers: dict[str, Any] | None = None, schema: dict[str, Any] = _ERROR
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        response["headers"] = headers
    return response


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_OPEN = {"type": "object"}

SCHEMAS: dict[str, Any] = {
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
    "TorchServeError": {
        "type": "object",
        "required": ["code", "type", "message"],
        "properties": {
            "code": {"type": "integer"},
            "type": {"type": "string"},
            "message": {"type": "string"},
        },
    },
    "OipError": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    },
    "Prediction": {
        "type": "object",
        "required": ["index", "label", "score"],
        "properties": {
            "index": {"type": "integer", "minimum": 0},
            "label": {"type": "string"},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
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
    "Timing": {
        "type": "object",
        "required": ["queue", "inference", "total"],
        "properties": {
            k: {"type": "number", "minimum": 0} for k in ("queue", "inference", "total")
        },
    },
    "SinglePrediction": {
        "type": "object",
        "required": ["predictions", "model", "timing_ms"],
        "properties": {
            "predictions": {"type": "array", "items": {"$ref": "#/components/schemas/Prediction"}},
            "model": {"$ref": "#/components/schemas/Model"},
            "timing_ms": {"$ref": "#/components/schemas/Timing"},
        },
    },
    "BatchPrediction": {
        "type": "object",
        "required": ["results", "model", "timing_ms"],
        "properties": {
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["filename", "predictions"],
                    "properties": {
                        "filename": {"type": ["string", "null"]},
                        "predictions": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Prediction"},
                        },
                    },
                },
            },
            "model": {"$ref": "#/components/schemas/Model"},
            "timing_ms": {"$ref": "#/components/schemas/Timing"},
        },
    },
}

_PREDICT = {
    "summary": "Classify one or more images.",
    "description": f"Images in {imaging.FORMAT_NAMES}; EXIF orientation is applied.",
    "parameters": [
        {
            "name": "topk",
            "in": "query",
            "description": "How many classes to return: 1 to min(20, classes).",
            "schema": {"type": "integer", "minimum": 1},
        },
        {
            "name": "lang",
            "in": "query",
            "description": "Language of the labels: one the model has labels in.",
            "schema": {"type": "string", "default": "en"},
        },
    ],
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    "responses": {
        "200": _json(
            "Top-k classes: `predictions` for one image, `results` for several.",
            {
                "oneOf": [
                    {"$ref": "#/components/schemas/SinglePrediction"},
                    {"$ref": "#/components/schemas/BatchPrediction"},
                ]
            },
        ),
        "400": _error("No image, or the image is corrupt."),
        "401": _error("WANWU_API_KEYS is set and no valid bearer key was sent."),
        "408": _error("The body arrived too slowly (WANWU_BODY_TIMEOUT_S, WANWU_BODY_MIN_KBPS)."),
        "411": _error("A chunked body: send a Content-Length."),
        "413": _error("Body, file count or pixel count over its limit."),
        "415": _error("Not a supported image type or body type."),
        "422": _error("topk or lang out of range."),
        "500": _error("The model failed; the error was logged."),
        "503": _error("Not ready, or overloaded.", _RETRY_AFTER),
        "504": _error("The request waited longer than WANWU_TIMEOUT_MS."),
    },
}


def _path(*names: str) -> list[dict[str, Any]]:
    return [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
    ]


def _errors(schema: dict[str, Any], *statuses: int) -> dict[str, Any]:
    """The error responses of a protocol route, in that protocol's shape."""
    described = {
        400: "Malformed request, or no image, or a corrupt one.",
        401: "WANWU_API_KEYS is set and no valid bearer key was sent.",
        404: "No model by that name or version.",
        413: "Body, image count or pixel count over its limit.",
        415: "Not a supported image type, or a compressed body.",
        500: "The model failed; the error was logged.",
        503: "Not ready, or overloaded.",
        504: "The request waited longer than WANWU_TIMEOUT_MS.",
    }
    return {
        str(status): _error(described[status], _RETRY_AFTER if status == 503 else None, schema)
        for status in statuses
    }


_TS_ERROR = {"$ref": "#/components/schemas/TorchServeError"}
_OIP_ERROR = {"$ref": "#/components/schemas/OipError"}
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_LABEL_SCORES = {"type": "object", "additionalProperties": {"type": "number"}}
_TS_PREDICT = {
    "summary": "TorchServe: classify images; top-5 {label: probability} per image.",
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        name: {"type": "array", "items": {"type": "string", "format": "binary"}}
                        for name in ("data", "file")
                    },
                }
            },
            "image/*": _BINARY,
            "application/octet-stream": _BINARY,
            "text/plain": {"schema": {"type": "string", "description": "Base64 image."}},
            "application/json": {"schema": {"type": "string", "description": "Base64 image."}},
        },
    },
    "responses": {
        "200": _json(
            "One object for one image, a list of them for several.",
            {"oneOf": [_LABEL_SCORES, {"type": "array", "items": _LABEL_SCORES}]},
        ),
        **_errors(_TS_ERROR, 400, 401, 404, 413, 415, 500, 503, 504),
    },
}
_OIP_TENSOR = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string"},
        "parameters": {"type": "object"},
        "data": {"type": "array"},
    },
}
_OIP_INFER = {
    "summary": "OIP v2: classify a BYTES tensor of encoded images.",
    "parameters": [
        {
            "name": "Inference-Header-Content-Length",
            "in": "header",
            "description": "Length of the JSON header when binary tensor data follows it.",
            "schema": {"type": "string"},
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {"type": "array", "items": _OIP_TENSOR},
                        "outputs": {"type": "array", "items": _OIP_TENSOR},
                    },
                }
            },
            "application/octet-stream": _BINARY,
        },
    },
    "responses": {
        "200": {
            "description": "PROBS: FP32 probabilities, or classification strings.",
            "content": {
                "application/json": {"schema": _OPEN},
                "application/octet-stream": _BINARY,
            },
        },
        **_errors(_OIP_ERROR, 400, 401, 404, 413, 415, 500, 503, 504),
    },
}


def _get(summary: str, errors: dict[str, Any], parameters: list[dict[str, Any]] | None = None):
    operation = {"summary": summary, "responses": {"200": _json("OK.", _OPEN), **errors}}
    if parameters:
        operation["parameters"] = parameters
    return {"get": operation}


_NOT_SERVED = {
    "summary": "TorchServe management: not served; one model is chosen at start.",
    "responses": {"404": _error("Not served (docs/MIGRATING.md).", schema=_TS_ERROR)},
}

PROTOCOL_PATHS: dict[str, Any] = {
    "/predictions/{model_name}": {
        "post": {**_TS_PREDICT, "parameters": _path("model_name")},
        "put": {**_TS_PREDICT, "parameters": _path("model_name")},
    },
    "/predictions/{model_name}/{version}": {
        "post": {**_TS_PREDICT, "parameters": _path("model_name", "version")},
        "put": {**_TS_PREDICT, "parameters": _path("model_name", "version")},
    },
    "/ping": {
        "get": {
            "summary": "TorchServe: Healthy once this worker is ready.",
            "responses": {
                "200": _json("Healthy.", _OPEN),
                "503": _json("Unhealthy: warming up.", _OPEN),
            },
        }
    },
    "/models": {
        **_get("TorchServe: list the served model.", {}),
        "post": _NOT_SERVED,
    },
    "/models/{model_name}": {
        **_get(
            "TorchServe: describe the served model.", _errors(_TS_ERROR, 404), _path("model_name")
        ),
        "put": {**_NOT_SERVED, "parameters": _path("model_name")},
        "delete": {**_NOT_SERVED, "parameters": _path("model_name")},
    },
    "/models/{model_name}/{version}": {
        "get": {**_NOT_SERVED, "parameters": _path("model_name", "version")}
    },
    "/models/{model_name}/{version}/set-default": {
        "put": {**_NOT_SERVED, "parameters": _path("model_name", "version")}
    },
    "/v2": _get("OIP: server metadata and extensions.", {}),
    "/v2/health/live": _get("OIP: the process answers.", {}),
    "/v2/health/ready": _get("OIP: this worker is ready.", _errors(_OIP_ERROR, 503)),
    "/v2/models/{model_name}": _get(
        "OIP: model metadata.", _errors(_OIP_ERROR, 404), _path("model_name")
    ),
    "/v2/models/{model_name}/versions/{version}": _get(
        "OIP: model metadata.", _errors(_OIP_ERROR, 404), _path("model_name", "version")
    ),
    "/v2/models/{model_name}/ready": _get(
        "OIP: the model is ready.", _errors(_OIP_ERROR, 404, 503), _path("model_name")
    ),
    "/v2/models/{model_name}/versions/{version}/ready": _get(
        "OIP: the model is ready.",
        _errors(_OIP_ERROR, 404, 503),
        _path("model_name", "version"),
    ),
    "/v2/models/{model_name}/infer": {
        "post": {**_OIP_INFER, "parameters": _OIP_INFER["parameters"] + _path("model_name")}
    },
    "/v2/models/{model_name}/versions/{version}/infer": {
        "post": {
            **_OIP_INFER,
            "parameters": _OIP_INFER["parameters"] + _path("model_name", "version"),
        }
    },
}


def _for_model(classifier: Classifier) -> tuple[dict[str, Any], dict[str, Any]]:
    """/predict and the schemas with this model's topk range, languages and class indices."""
    predict, schemas = copy.deepcopy(_PREDICT), copy.deepcopy(SCHEMAS)
    _, high, default = common.topk_range(classifier.num_classes)
    topk, lang = predict["parameters"]
    topk["schema"].update(maximum=high, default=default)
    lang["schema"]["enum"] = list(classifier.languages)
    index = schemas["Prediction"]["properties"]["index"]
    index["maximum"] = classifier.num_classes - 1
    single = schemas["SinglePrediction"]["properties"]["predictions"]
    batch = schemas["BatchPrediction"]["properties"]["results"]["items"]["properties"]
    for predictions in (single, batch["predictions"]):
        predictions["maxItems"] = high
    return predict, schemas


def spec(classifier: Classifier) -> dict[str, Any]:
    """Return the OpenAPI document for the model this worker serves."""
    predict, schemas = _for_model(classifier)
    trained = "" if classifier.trained else ", UNTRAINED: seeded random weights"
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "wanwu",
            "version": "1",
            "description": (
                f"万物识别: image classification. Model {classifier.name} "
                f"({classifier.arch or 'TorchScript'}, {classifier.num_classes} classes, "
                f"labels in {', '.join(classifier.languages)}{trained})."
            ),
            "x-model": {
                **classifier.info(),
                "classes": classifier.num_classes,
                "languages": list(classifier.languages),
            },
        },
        "paths": {
            "/predict": {"post": predict},
            "/healthz": {
                "get": {
                    "summary": "Process liveness and whether the model is trained.",
                    "responses": {"200": _json("Alive.", _OPEN)},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Whether this worker is ready to serve.",
                    "responses": {
                        "200": _json("Ready.", _OPEN),
                        "503": _error("Warming up.", _RETRY_AFTER),
                    },
                }
            },
            "/v1/model": {
                "get": {
                    "summary": "Model, device, precision and batching settings.",
                    "responses": {"200": _json("Model description.", _OPEN)},
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics summed over workers.",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "401": _error("WANWU_METRICS_PUBLIC=0 and no valid bearer key was sent."),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document.",
                    "responses": {"200": _json("OpenAPI 3.1.", _OPEN)},
                }
            },
            "/": {
                "get": {
                    "summary": "The upload page.",
                    "responses": {
                        "200": {"description": "HTML page.", "content": {"text/html": {}}}
                    },
                }
            },
            **PROTOCOL_PATHS,
        },
        "components": {"schemas": schemas},
    }
