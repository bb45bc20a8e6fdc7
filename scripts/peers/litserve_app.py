"""LitServe peer for scripts/bench_peers.py: the same TorchScript artifact, batching on.

Runs in its own virtualenv (litserve is not a project dependency). Multipart field "content".
"""

from __future__ import annotations

import io
import sys

import litserve as ls
import torch
from PIL import Image
from torchvision.models import ResNet18_Weights


class ResNetAPI(ls.LitAPI):
    def setup(self, device):
        torch.set_num_threads(int(sys.argv[3]))
        self.model = torch.jit.load(sys.argv[1]).eval()
        self.transform = ResNet18_Weights.IMAGENET1K_V1.transforms()
        self.categories = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]

    def decode_request(self, request):
        image = Image.open(io.BytesIO(request["content"].file.read())).convert("RGB")
        return self.transform(image)

    def batch(self, inputs):
        return torch.stack(inputs)

    def predict(self, x):
        with torch.inference_mode():
            return torch.softmax(self.model(x), dim=1)

    def unbatch(self, output):
        return list(output)

    def encode_response(self, probs):
        scores, indices = probs.topk(3)
        return {
            "predictions": [
                {"index": int(i), "label": self.categories[int(i)], "score": float(s)}
                for s, i in zip(scores, indices, strict=True)
            ]
        }


if __name__ == "__main__":
    # argv: model path, port, torch threads, max batch, workers (the model path and threads
    # are read again in setup(), which runs in each LitServe worker process).
    port, max_batch, workers = int(sys.argv[2]), int(sys.argv[4]), int(sys.argv[5])
    server = ls.LitServer(
        ResNetAPI(max_batch_size=max_batch, batch_timeout=0.005),
        accelerator="cpu",
        workers_per_device=workers,
    )
    server.run(port=port, host="127.0.0.1", generate_client_file=False)
