"""Triton model repositories served as they are, against real Gunicorn and the real clients.

The seed team's repository (ONNX, their config.pbtxt word for word) and a `pytorch_libtorch`
model with a label_filename, beside a wanwu export: `tritonclient.http` and `tritonclient.grpc`
read metadata, configuration and statistics and infer (JSON, binary, gRPC raw); each answer
equals ONNX Runtime's or TorchScript's own run of the same file.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import requests
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from benchkit import triton_repo
from benchkit.grpcload import grpc_server
from benchkit.images import image_bytes
from tests.conftest import add_version

pytestmark = pytest.mark.integration

ROWS = 3


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    root = tmp_path_factory.mktemp("triton-repo")
    triton_repo.seed_team(root)
    triton_repo.seed_team(root, "wuwang_slow", triton_repo.Slow())
    triton_repo.libtorch(root)
    triton_repo.datatypes(root)
    add_version(root, "tiny", 1, {"en": [f"c{i}" for i in range(10)]})  # a wanwu export
    return root


@pytest.fixture(scope="module")
def server(repository, tmp_path_factory):
    with grpc_server(
        tmp_path_factory.mktemp("triton"), workers=1, model_repository=repository
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server):
    address = server.url.removeprefix("http://")
    with httpclient.InferenceServerClient(address, concurrency=16) as client:
        yield client


@pytest.fixture(scope="module")
def grpc(server):
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        yield client


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(0).random((ROWS, 3, 224, 224), dtype=np.float32)


@pytest.fixture(scope="module")
def direct(repository, batch):
    """What ONNX Runtime and TorchScript answer for `batch`, run directly on the same files."""
    session = ort.InferenceSession(str(repository / "wuwang/1/model.onnx"))
    module = torch.jit.load(str(repository / "seeded_pt/1/model.pt"))
    return {
        "wuwang": session.run(["output"], {"input": batch})[0],
        "seeded_pt": module(torch.from_numpy(batch)).detach().numpy(),
    }


def http_infer(http, model, name, batch, binary, outputs=None):
    tensor = httpclient.InferInput(name, list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    return http.infer(model, [tensor], outputs=outputs)


def grpc_infer(grpc, model, name, batch, outputs=None):
    tensor = grpcclient.InferInput(name, list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)  # raw_input_contents, as tritonclient.grpc sends it
    return grpc.infer(model, [tensor], outputs=outputs)


MODELS = [("wuwang", "input", "output"), ("seeded_pt", "INPUT__0", "OUTPUT__0")]


def test_the_seed_teams_client_code_works_unchanged(server, batch, direct):
    """Their client: a JSON POST of the flattened FP32 tensor, `outputs[0].data` read back."""
    payload = {
        "inputs": [
            {
                "name": "input",
                "shape": [1, 3, 224, 224],
                "datatype": "FP32",
                "data": batch[0].flatten().tolist(),
            }
        ]
    }
    result = requests.post(f"{server.url}/v2/models/wuwang/infer", json=payload, timeout=60).json()
    scores = np.array(result["outputs"][0]["data"], np.float32)
    np.testing.assert_allclose(scores, direct["wuwang"][0], atol=1e-5, rtol=0)


def test_metadata_names_the_configs_tensors(http, grpc):
    meta = http.get_model_metadata("wuwang")
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 224, 224]}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 1000]}]
    meta = grpc.get_model_metadata("seeded_pt", as_json=True)
    assert meta["platform"] == "pytorch_libtorch"
    assert meta["inputs"][0]["name"] == "INPUT__0"
    assert meta["outputs"][0]["shape"] == ["-1", "1000"]  # int64 in protobuf's JSON


def test_config_is_the_config_pbtxt(http, grpc):
    config = http.get_model_config("wuwang")
    assert config["max_batch_size"] == 32
    assert config["dynamic_batching"]["preferred_batch_size"] == [4, 8, 16]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 100000
    assert config["input"][0]["dims"] == [3, 224, 224]
    assert config["output"][0]["dims"] == [1000]
    config = grpc.get_model_config("seeded_pt").config
    assert config.output[0].label_filename == "labels.txt"
    assert config.max_batch_size == 8
    # a wanwu export is described in the same terms
    config = http.get_model_config("tiny", "1")
    assert config["input"][0]["name"] == "IMAGE"
    assert config["output"][0]["dims"] == [10]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("model,name,output", MODELS)
def test_http_infer_equals_the_direct_run(http, batch, direct, model, name, output, binary):
    result = http_infer(http, model, name, batch, binary)
    assert result.get_response()["model_version"] == "1"
    np.testing.assert_allclose(result.as_numpy(output), direct[model], atol=1e-5, rtol=0)


@pytest.mark.parametrize("model,name,output", MODELS)
def test_grpc_raw_infer_equals_the_direct_run(grpc, batch, direct, model, name, output):
    result = grpc_infer(grpc, model, name, batch)
    np.testing.assert_allclose(result.as_numpy(output), direct[model], atol=1e-5, rtol=0)


def test_classification_strings_name_the_labels(http, grpc, batch, direct):
    top = np.argsort(-direct["seeded_pt"], axis=1)[:, :3]
    wanted = [
        [f"{direct['seeded_pt'][r, i]:.6f}:{i}:class-{i}" for i in top[r]] for r in range(ROWS)
    ]
    asked = httpclient.InferRequestedOutput("OUTPUT__0", class_count=3)
    got = http_infer(http, "seeded_pt", "INPUT__0", batch, True, [asked]).as_numpy("OUTPUT__0")
    assert [[s.decode() for s in row] for row in got] == wanted
    asked = grpcclient.InferRequestedOutput("OUTPUT__0", class_count=3)
    got = grpc_infer(grpc, "seeded_pt", "INPUT__0", batch, [asked]).as_numpy("OUTPUT__0")
    assert [[s.decode() for s in row] for row in got] == wanted
    # without a label_filename: "score:index"
    asked = httpclient.InferRequestedOutput("output", class_count=1)
    got = http_infer(http, "wuwang", "input", batch[:1], False, [asked]).as_numpy("output")
    best = int(np.argmax(direct["wuwang"][0]))
    assert got[0][0].decode() == f"{direct['wuwang'][0, best]:.6f}:{best}"


def typed_inputs(module, binary: bool | None) -> tuple[list, dict[str, np.ndarray]]:
    arrays = {
        "u8": np.array([[1, 2, 3, 250], [0, 0, 0, 1]], np.uint8),
        "i64": np.array([[2**40, -5, 0, 7], [1, 1, 1, 1]], np.int64),
        "h": np.array([[[0.5, 1.5], [-2.0, 3.25]], [[0, 0], [0, 1]]], np.float16),
        "s": np.array([["猫".encode(), b"dog"], [b"", b"x"]], dtype=object),
    }
    datatypes = {"u8": "UINT8", "i64": "INT64", "h": "FP16", "s": "BYTES"}
    tensors = []
    for name, array in arrays.items():
        tensor = module.InferInput(name, list(array.shape), datatypes[name])
        if binary is None:
            tensor.set_data_from_numpy(array)
        else:
            tensor.set_data_from_numpy(array, binary_data=binary or name == "h")  # FP16: binary
        tensors.append(tensor)
    return tensors, arrays


@pytest.mark.parametrize("wire", ["http-json", "http-binary", "grpc-raw"])
def test_every_classifier_datatype_round_trips(http, grpc, wire):
    module, client = (grpcclient, grpc) if wire == "grpc-raw" else (httpclient, http)
    tensors, sent = typed_inputs(module, None if wire == "grpc-raw" else wire == "http-binary")
    result = client.infer("dtypes", tensors)
    total = sent["u8"] + sent["i64"].astype(np.float32) + sent["h"].reshape(2, 4)
    np.testing.assert_array_equal(result.as_numpy("total"), total.astype(np.float32))
    np.testing.assert_array_equal(result.as_numpy("h_out"), sent["h"].reshape(2, 4))
    assert result.as_numpy("s_out").tolist() == sent["s"].tolist()


def test_shape_and_datatype_errors_say_what_the_model_expects(http, grpc, batch):
    with pytest.raises(InferenceServerException) as caught:
        http_infer(http, "wuwang", "input", batch[:, :, :100], True)
    assert "Expected [-1,3,224,224], got [3,3,100,224]" in caught.value.message()
    tensor = grpcclient.InferInput("input", [1, 3, 224, 224], "FP64")
    tensor.set_data_from_numpy(batch[:1].astype(np.float64))
    with pytest.raises(InferenceServerException) as caught:
        grpc.infer("wuwang", [tensor])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "data-type is 'FP64', but model 'wuwang' expects 'FP32'" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        http_infer(http, "wuwang", "images", batch, True)
    assert "unexpected inference input 'images' for model 'wuwang'" in caught.value.message()
    too_many = np.zeros((33, 3, 224, 224), np.float32)
    with pytest.raises(InferenceServerException) as caught:
        http_infer(http, "wuwang", "input", too_many, True)
    assert "batch-size must be <= 32" in caught.value.message()


def test_images_go_to_image_models_and_tensors_to_tensor_models(server, http):
    answer = requests.post(
        f"{server.url}/predict?model=wuwang",
        data=image_bytes(seed=0),
        headers={"Content-Type": "image/png"},
        timeout=60,
    )
    assert answer.status_code == 400
    assert "/v2/models/wuwang/infer" in answer.json()["error"]["message"]
    tensor = httpclient.InferInput("IMAGE", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([image_bytes(seed=0)], dtype=object))
    probs = http.infer("tiny", [tensor]).as_numpy("PROBS")
    assert probs.shape == (1, 10)
    page = requests.get(f"{server.url}/", timeout=60)
    assert page.status_code == 200 and "wuwang" not in page.text  # offers image models only
    assert requests.get(f"{server.url}/?model=wuwang", timeout=60).status_code == 400
    described = requests.get(f"{server.url}/v1/model?model=wuwang", timeout=60)
    assert described.status_code == 200 and described.json()["platform"] == "onnxruntime_onnx"


def test_concurrent_clients_share_passes(http, grpc, batch):
    """Single-row requests from many clients at once: fewer passes than rows.

    The seed team's config on a slower network: on a fast machine the tiny one answers a row
    before the next client's request is parsed, which leaves nothing to batch.
    """

    tensor = httpclient.InferInput("input", [1, 3, 224, 224], "FP32")
    tensor.set_data_from_numpy(batch[:1])

    def counts() -> tuple[int, int]:
        stats = http.get_inference_statistics("wuwang_slow")["model_stats"][0]
        return stats["inference_count"], stats["execution_count"]

    before = counts()
    for _ in range(50):  # rounds of 16 at once, until the queue held several rows together
        pending = [
            http.async_infer("wuwang_slow", [tensor]) for _ in range(16)
        ]  # gevent, concurrent
        for request in pending:
            request.get_result()
        inferences, executions = (a - b for a, b in zip(counts(), before, strict=True))
        if executions < inferences:
            break
    assert executions < inferences
    stats = grpc.get_inference_statistics("wuwang_slow").model_stats[0]
    assert stats.inference_stats.success.count >= 16
    timed = stats.inference_stats
    assert min(timed.success.ns, timed.queue.ns, timed.compute_infer.ns) > 0
    assert stats.last_inference > 0
