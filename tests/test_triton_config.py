"""config.pbtxt read against Triton's ModelConfig: honoured, or refused naming the field."""

from __future__ import annotations

import time

import numpy as np
import onnxruntime as ort
import pytest
import torch

from app.artifact import ArtifactError
from app.repository.plans import Plan
from app.repository.registry import Registry
from app.repository.scan import scan
from app.repository.triton import plan, read_config, serving_version
from app.statistics import as_json
from app.tensor_model import TensorModel
from benchkit import triton_repo
from tests.conftest import add_version, make_settings


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    return triton_repo.export_onnx(
        triton_repo.Seeded(10), tmp_path_factory.mktemp("onnx") / "model.onnx"
    )


def folder_with(root, config: str, onnx_file, versions=(1,), name="m"):
    folder = root / name
    for version in versions:
        (folder / str(version)).mkdir(parents=True)
        (folder / str(version) / "model.onnx").write_bytes(onnx_file.read_bytes())
    (folder / "config.pbtxt").write_text(config)
    return folder


BASE = """
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "input", data_type: TYPE_FP32, dims: [3, 224, 224] } ]
output [ { name: "output", data_type: TYPE_FP32, dims: [10] } ]
"""


@pytest.mark.parametrize(
    "extra,named",
    [
        ("sequence_batching { }", "`sequence_batching` is not supported: wanwu serves stateless"),
        ('parameters { key: "x" value { string_value: "1" } }', "`parameters` is not supported"),
        ("instance_group [ { count: 2 } ]", "instance_group count 2: wanwu runs one instance"),
        ("instance_group [ { kind: KIND_GPU } ]", "KIND_GPU, but WANWU_DEVICE is the CPU"),
        ("version_policy { all { } }", "`version_policy.all` is not supported"),
        ("version_policy { latest { num_versions: 2 } }", "version_policy: wanwu serves one"),
        ("response_cache { enable: true }", "`response_cache.enable` is not supported"),
        ("optimization { graph { level: 1 } }", "`optimization.graph.level` is not supported"),
        ("dynamic_batching { priority_levels: 2 }", "`dynamic_batching.priority_levels`"),
        ('name: "other"', "name 'other' must be the folder's, 'm'"),
        ("max_batch_size: 2", 'multiple "max_batch_size" fields'),
        ("dims_typo: 3", 'no field named "dims_typo"'),
    ],
)
def test_a_config_wanwu_cannot_honour_stops_start_up_naming_the_field(
    tmp_path, onnx_file, extra, named
):
    folder = folder_with(tmp_path, BASE + extra, onnx_file)
    with pytest.raises(ArtifactError, match="config.pbtxt") as caught:
        config = read_config(folder)
        serving_version(folder, config, {"1": folder / "1"})
        plan(folder, "1", config, "cpu")
    assert named in str(caught.value)


def test_platforms_and_tensor_types_outside_the_table_are_refused(tmp_path, onnx_file):
    folder = folder_with(tmp_path, BASE.replace("onnxruntime_onnx", "tensorrt_plan"), onnx_file)
    with pytest.raises(ArtifactError, match="platform 'tensorrt_plan'.*not served"):
        plan(folder, "1", read_config(folder), "cpu")
    folder = folder_with(
        tmp_path,
        BASE.replace("TYPE_FP32, dims: [10]", "TYPE_BF16, dims: [10]"),
        onnx_file,
        name="n",
    )
    with pytest.raises(ArtifactError, match="data_type TYPE_BF16 is not served"):
        plan(folder, "1", read_config(folder), "cpu")


def test_version_policy_and_default_model_filename(tmp_path, onnx_file):
    config = (
        BASE + 'version_policy { specific { versions: [2] } }\ndefault_model_filename: "c.onnx"'
    )
    folder = folder_with(tmp_path, config, onnx_file, versions=(1, 2, 3))
    (folder / "2" / "model.onnx").rename(folder / "2" / "c.onnx")
    assert scan(tmp_path)["m"] == ("2", folder / "2" / "c.onnx")
    with pytest.raises(ArtifactError, match="3/c.onnx not found"):
        plan(folder, "3", read_config(folder), "cpu")


def test_batching_follows_max_batch_size_and_dynamic_batching(tmp_path, onnx_file):
    seed = folder_with(tmp_path, triton_repo.SEED_TEAM_CONFIG, onnx_file, name="wuwang")
    spec = plan(seed, "1", read_config(seed), "cpu")
    assert (spec.batch_rows, spec.max_wait_ms) == (32, 100.0)
    plain = folder_with(tmp_path, BASE, onnx_file)
    assert plan(plain, "1", read_config(plain), "cpu").max_wait_ms == 0


def test_reshape_and_max_batch_size_zero_give_the_model_its_own_shape(tmp_path, onnx_file):
    config = """
    platform: "onnxruntime_onnx"
    max_batch_size: 0
    input [ { name: "input", data_type: TYPE_FP32, dims: [150528],
              reshape: { shape: [1, 3, 224, 224] } } ]
    output [ { name: "output", data_type: TYPE_FP32, dims: [1, 10] } ]
    """
    folder = folder_with(tmp_path, config, onnx_file)
    model = TensorModel.load(plan(folder, "1", read_config(folder), "cpu"))
    flat = np.random.default_rng(0).random(150528, dtype=np.float32)
    (out,) = model(model.collate([(flat,)]))[0]
    session = ort.InferenceSession(str(onnx_file))
    want = session.run(None, {"input": flat.reshape(1, 3, 224, 224)})[0]
    np.testing.assert_allclose(out, want, atol=1e-6)
    assert out.shape == (1, 10)  # the request's whole [1, 10]: one "row" without a batch


def test_a_model_file_without_the_configs_tensors_is_refused(tmp_path, onnx_file):
    folder = folder_with(tmp_path, BASE.replace('"input"', '"images"'), onnx_file)
    with pytest.raises(ArtifactError, match="input 'images' of config.pbtxt is not in the model"):
        TensorModel.load(plan(folder, "1", read_config(folder), "cpu"))


def test_libtorch_inputs_by_forward_argument_name(tmp_path):
    folder = triton_repo.scaled(tmp_path)  # forward(scale, x); the config lists x first
    model = TensorModel.load(plan(folder, "1", read_config(folder), "cpu"))
    row = (np.array([1.0, 2.0], np.float32), np.array([3.0], np.float32))
    (y,) = model(model.collate([row]))[0]
    assert y.tolist() == [3.0, 6.0]


def test_a_mixed_repository_serves_both_kinds(tmp_path, onnx_file):
    triton_repo.seed_team(tmp_path, name="alpha")  # first by name, but takes tensors
    add_version(tmp_path, "tiny", 1, {"en": ["a", "b"]})
    registry = Registry.load(make_settings(tmp_path, model_repository=str(tmp_path)))
    assert isinstance(registry.find("alpha").classifier, TensorModel)
    assert registry.find("tiny").classifier.num_classes == 2
    assert registry.default_name == "tiny"  # the first image model: what /predict classifies


def test_config_json_writes_64_bit_integers_as_numbers(tmp_path, onnx_file):
    folder = folder_with(tmp_path, triton_repo.SEED_TEAM_CONFIG, onnx_file, name="wuwang")
    data = as_json(read_config(folder))
    assert data["input"][0]["dims"] == [3, 224, 224]
    assert data["dynamic_batching"]["max_queue_delay_microseconds"] == 100000
    assert data["max_batch_size"] == 32


def test_a_new_triton_version_loads_while_the_old_one_serves(tmp_path):
    """What the management API's load does in each worker: stage, then switch."""
    folder = triton_repo.seed_team(tmp_path)
    registry = Registry.load(make_settings(tmp_path, model_repository=str(tmp_path)))
    registry.start()
    try:
        assert registry.wait_ready(120)
        (folder / "2").mkdir()
        (folder / "2" / "model.onnx").write_bytes((folder / "1" / "model.onnx").read_bytes())
        registry.stage("wuwang", "2")
        retired = registry.switch({"wuwang": Plan("2")})
        registry.retire(retired, timeout=30)
        engine = registry.find("wuwang")
        assert engine.classifier.version == "2" and engine.ready
        row = (np.zeros((3, 224, 224), np.float32),)
        with engine.admit(1, time.monotonic()) as reservation:
            future = reservation.submit(row)
        (scores,) = engine.wait(future, reservation.deadline).output
        want = triton_repo.Seeded()(torch.zeros(1, 3, 224, 224)).detach().numpy()[0]
        np.testing.assert_allclose(scores, want, atol=1e-5)
    finally:
        registry.stop(30)
