#!/usr/bin/env python3
"""The ladder's first rungs: a plain Flask development server, one image at a time.

Not the product: the naive way to serve the model, kept to measure what each step of
the real service buys. POST a JPEG body to /predict; answers the top-3 as JSON.
"""

from __future__ import annotations

import argparse
import io
import threading
from pathlib import Path

import torch
from flask import Flask, request
from PIL import Image
from torchvision.models import ResNet18_Weights, resnet18

from app.settings import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", choices=["eager", "torchscript"], default="eager")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        torch.set_num_interop_threads(1)
    if args.model == "eager":
        model = resnet18(weights=None).eval()  # weights do not change the speed
    else:
        model = torch.jit.load(str(ROOT / DEFAULT_MODEL)).eval()
    transform = ResNet18_Weights.IMAGENET1K_V1.transforms()
    categories = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    lock = threading.Lock()  # one image at a time through the model
    app = Flask(__name__)

    @app.post("/predict")
    def predict():
        x = transform(Image.open(io.BytesIO(request.get_data())).convert("RGB"))
        with lock, torch.inference_mode():
            probs = torch.softmax(model(x[None]), dim=1)[0]
        scores, indices = probs.topk(3)
        return {
            "predictions": [
                {"index": int(i), "label": categories[int(i)], "score": float(s)}
                for s, i in zip(scores, indices, strict=True)
            ]
        }

    app.run(host="127.0.0.1", port=args.port, threaded=True)


if __name__ == "__main__":
    main()
