"""Export an image classifier as a wanwu artifact (TorchScript, .pt2 or ONNX) plus its manifest.

`python -m app.export --help` (app/export/cli.py, never imported here: the management API
imports the library, not the command line) says what it takes. The library:
`ExportRequest` (request.py) is one export, validated once; `export(request)` (library.py)
loads it from its source (sources.py picks it: torchvision there; files.py: weights,
TorchScript and ONNX files; ecosystem.py: timm, Hugging Face, factories; mar.py: TorchServe
archives), checks it and writes it (formats.py).
"""

from app.export.library import export
from app.export.request import ExportError, ExportRequest
from app.export.sources import architectures, build_model, official_weights

__all__ = [
    "ExportError",
    "ExportRequest",
    "architectures",
    "build_model",
    "export",
    "official_weights",
]
