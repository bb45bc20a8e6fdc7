"""A really trained model through the whole path: PNG upload -> decode -> batcher -> model ->
labels -> JSON, under real Gunicorn, against the trained model's own answers.

The digits classifier is trained in this session (`digits_model` in conftest.py) on the
handwritten digits scikit-learn ships, and exported with `python -m app.export`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import torch

from app.model import Classifier
from app.runtime import cpu_supports_bf16
from benchkit.digits import LABELS_EN, LABELS_ZH

pytestmark = pytest.mark.integration

FILES_PER_REQUEST = 8


def served_probabilities(url: str, images: list[bytes]) -> torch.Tensor:
    """Every class's served score for each image (topk=10: all of them), in image order."""

    def post(start: int) -> list[list[dict]]:
        files = [
            ("file", (f"{start + i}.png", png, "image/png"))
            for i, png in enumerate(images[start : start + FILES_PER_REQUEST])
        ]
        response = requests.post(f"{url}/predict?topk=10", files=files, timeout=60)
        assert response.status_code == 200, response.text
        return [r["predictions"] for r in response.json()["results"]]

    # Concurrent requests, so that the batcher merges images of different requests.
    with ThreadPoolExecutor(4) as pool:
        answers = [
            p for chunk in pool.map(post, range(0, len(images), FILES_PER_REQUEST)) for p in chunk
        ]
    probs = torch.zeros(len(images), 10)
    for row, predictions in zip(probs, answers, strict=True):
        assert [p["label"] for p in predictions] == [LABELS_EN[p["index"]] for p in predictions]
        for p in predictions:
            row[p["index"]] = p["score"]
    return probs


def test_the_trained_digits_model_answers_right_over_http(digits_model, gunicorn):
    with gunicorn(workers=2, model=digits_model.path, precision="fp32") as server:
        served = served_probabilities(server.url, digits_model.images)
        zh = requests.post(
            f"{server.url}/predict?lang=zh",
            data=digits_model.images[0],
            headers={"Content-Type": "image/png"},
            timeout=30,
        ).json()
        info = requests.get(f"{server.url}/v1/model", timeout=10).json()
    truth = torch.tensor(digits_model.labels)
    accuracy = float((served.argmax(1) == truth).float().mean())
    assert accuracy >= 0.95, f"held-out top-1 {accuracy:.1%} over HTTP"
    # Identical to the trained model itself, image by image (the response rounds to 1e-6).
    assert torch.equal(served.argmax(1), digits_model.reference.argmax(1))
    gap = float((served - digits_model.reference).abs().max())
    print(f"held-out top-1 {accuracy:.2%} over HTTP; largest score gap {gap:.1e}")
    assert gap <= 1e-5, f"served scores differ from the trained model's by up to {gap:.2e}"
    top = zh["predictions"][0]
    assert top["label"] == LABELS_ZH[top["index"]] and len(zh["predictions"]) == 3
    assert info["name"] == "digits" and info["classes"] == 10 and info["trained"] is True
    assert info["languages"] == ["en", "zh"] and info["arch"] == "resnet18"


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bf16")
def test_bf16_mostly_agrees_with_fp32_on_the_digits(digits_model, record_property):
    """Reported, loosely bounded: docs/BENCHMARKS.md has the measured agreement."""
    from app import imaging

    spec = Classifier.load(digits_model.path).input_spec
    batch = torch.stack([imaging.load(png, spec, 10**6) for png in digits_model.images])
    top1 = {}
    for precision in ("fp32", "bf16"):
        classifier = Classifier.load(digits_model.path)
        classifier.prepare(torch.device("cpu"), precision)
        top1[precision] = classifier(batch).argmax(1)
    agreement = float((top1["bf16"] == top1["fp32"]).float().mean())
    record_property("bf16_top1_agreement", agreement)
    print(f"bf16 top-1 agreement with fp32 on {len(batch)} held-out digits: {agreement:.2%}")
    assert agreement >= 0.97
