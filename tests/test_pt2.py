""".pt2 packages: export (fp32, int8), the precision policy, serving in-process and under Gunicorn.

AOTInductor compiles take a minute or more on a small machine, so the packages of the tiny
test model are compiled once and kept in pytest's cache, keyed by everything that shapes them.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import re
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import torch

from app import imaging
from app.artifact import PT2_FORMAT, read_manifest, write_manifest
from app.backends import aoti
from app.backends import pt2 as served
from app.engine import Engine
from app.export import pt2
from app.model import Classifier
from app.settings import SettingsError
from app.web import create_app
from benchkit.images import image_bytes
from tests.conftest import INPUT_SPEC, ROOT, TinyNet, make_settings

MAX_BATCH = 4
JPEG = {"Content-Type": "image/jpeg"}
CALIBRATION_IMAGES = 24


def _cache_key() -> str:
    """What shapes the packages: torch, the build code, the tiny model, the fixture's choices."""
    choices = f"{torch.__version__} {MAX_BATCH} {CALIBRATION_IMAGES} {served.reduced_range()}"
    digest = hashlib.sha256(choices.encode())
    for source in ("app/imaging.py", "tests/conftest.py"):
        digest.update((ROOT / source).read_bytes())
    # The build code only: serving changes (app/backends/pt2.py) do not recompile.
    builders = (
        pt2._ReLU,
        pt2.own_relus,
        pt2.calibration_set,
        pt2._quantize,
        pt2.compile_package,
        pt2.manifest_fields,
    )
    for builder in builders:
        digest.update(inspect.getsource(builder).encode())
    return digest.hexdigest()[:16]


def manifest_like(source: Path, path: Path, **changes: object) -> None:
    """Write `path`'s manifest as a copy of `source`'s with `changes`."""
    manifest = {**read_manifest(source), **changes}
    for key in ("manifest_version", "artifact_sha256"):
        manifest.pop(key)
    write_manifest(path, **manifest)


@pytest.fixture(scope="session")
def calibration_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("calibration")
    for seed in range(CALIBRATION_IMAGES):
        (directory / f"img{seed:02d}.jpg").write_bytes(image_bytes("JPEG", seed=seed))
    return directory


@pytest.fixture(scope="session")
def packages(request, calibration_dir, tiny_model_path) -> dict[str, Path]:
    """fp32 and int8 packages of the tiny model (max batch 4), with manifests."""
    directory = Path(request.config.cache.mkdir(f"wanwu-pt2-{_cache_key()}"))
    paths = {}
    for precision in ("fp32", "int8"):
        path = directory / f"tiny-{precision}.pt2"
        if not path.with_suffix(".json").is_file():
            torch.manual_seed(0)
            images, record = (None, None)
            if precision == "int8":
                images, record = pt2.calibration_set(calibration_dir, INPUT_SPEC)
            # The seeded tiny model has near-ties everywhere: packaging is tested here, int8's
            # fidelity on a trained model in scripts/int8_fidelity.py.
            pt2.compile_package(
                TinyNet(), path, precision, MAX_BATCH, INPUT_SPEC["crop"], images, min_agreement=0
            )
            # The tiny TorchScript model's manifest (same weights), with the package's fields.
            manifest_like(
                tiny_model_path, path, **pt2.manifest_fields(precision, MAX_BATCH, "cpu", record)
            )
        paths[precision] = path
    return paths


def batch_of(n: int) -> torch.Tensor:
    return torch.stack([imaging.load(image_bytes(seed=s), INPUT_SPEC, 10**9) for s in range(n)])


def test_manifest_and_package_record_precision_and_calibration(packages, calibration_dir):
    manifest = read_manifest(packages["int8"])
    assert manifest["format"] == PT2_FORMAT and manifest["precision"] == "int8"
    assert manifest["max_batch"] == MAX_BATCH and manifest["device"] == "cpu"
    calibration = manifest["calibration"]
    assert calibration["images"] == CALIBRATION_IMAGES
    assert calibration["sha256"] == pt2.calibration_set(calibration_dir, INPUT_SPEC)[1]["sha256"]
    runner = torch._inductor.aoti_load_package(str(packages["int8"]))
    assert runner.get_metadata()[served.PRECISION_KEY] == "int8"
    assert manifest["int8_reduced_range"] is served.reduced_range()  # what this CPU needed


def test_an_8_bit_package_on_a_cpu_without_vnni_says_to_export_it_again(
    packages, monkeypatch, caplog
):
    manifest = {**read_manifest(packages["int8"]), "int8_reduced_range": False}
    monkeypatch.setattr(served, "reduced_range", lambda: True)  # as on a CPU without VNNI
    served.Package(packages["int8"], manifest)
    assert "this CPU has no VNNI" in caplog.text and "export it again here" in caplog.text
    caplog.clear()
    served.Package(packages["int8"], {**manifest, "int8_reduced_range": True})
    assert "VNNI" not in caplog.text


def test_agreement_is_judged_on_images_never_calibrated_on(calibration_dir):
    images, record = pt2.calibration_set(calibration_dir, INPUT_SPEC)
    calibrated, judged = pt2.held_out(torch.arange(len(images)))
    assert judged.tolist() == list(range(0, CALIBRATION_IMAGES, pt2.HOLD_OUT_EVERY))
    assert sorted(calibrated.tolist() + judged.tolist()) == list(range(CALIBRATION_IMAGES))
    assert record["images"] == CALIBRATION_IMAGES and record["held_out"] == len(judged)


def test_calibration_without_images_says_what_to_pass(tmp_path):
    for directory in (tmp_path, tmp_path / "missing"):
        with pytest.raises(ValueError, match="no images there"):
            pt2.calibration_set(directory, INPUT_SPEC)


def test_one_package_serves_every_batch_size_like_the_eager_model(packages):
    torch.manual_seed(0)
    eager = TinyNet().eval()
    fp32, int8 = (Classifier.load(packages[p]) for p in ("fp32", "int8"))
    for classifier, precision in ((fp32, "fp32"), (int8, "int8")):
        classifier.prepare(torch.device("cpu"), precision)
    for n in (1, 3, MAX_BATCH):
        x = batch_of(n)
        with torch.no_grad():
            expected = torch.softmax(eager(x), dim=1)
        torch.testing.assert_close(fp32(x), expected, atol=1e-5, rtol=0)
        # int8 rounds activations and weights: close, not equal.
        assert float((int8(x) - expected).abs().max()) < 0.01


def test_the_package_decides_the_precision(packages, caplog):
    package = served.Package(packages["int8"], read_manifest(packages["int8"]))
    cpu = torch.device("cpu")
    assert served.serving_precision("auto", package, cpu, MAX_BATCH) == "int8"
    assert served.serving_precision("int8", package, cpu, MAX_BATCH) == "int8"
    with caplog.at_level(logging.INFO, logger="app.backends.pt2"):
        # fp32 is the default: it cannot be told from unset, so it never conflicts.
        assert served.serving_precision("fp32", package, cpu, MAX_BATCH) == "int8"
    assert "serving int8" in caplog.text
    with pytest.raises(SettingsError, match="WANWU_PRECISION=bf16 conflicts"):
        served.serving_precision("bf16", package, cpu, MAX_BATCH)
    with pytest.raises(SettingsError, match="compiled for cpu"):
        served.serving_precision("auto", package, torch.device("cuda"), MAX_BATCH)
    with pytest.raises(SettingsError, match="at most 4"):
        served.serving_precision("auto", package, cpu, MAX_BATCH + 1)


def test_a_package_whose_metadata_disagrees_with_its_manifest_is_refused(packages, tmp_path):
    path = tmp_path / "liar.pt2"
    path.write_bytes(packages["fp32"].read_bytes())
    manifest_like(packages["fp32"], path, precision="bf16")
    with pytest.raises(SettingsError, match="compiled as fp32"):
        Classifier.load(path)


def test_in_process_app_serves_a_package(packages):
    settings = make_settings(packages["int8"], max_batch=MAX_BATCH)
    engine = Engine(Classifier.load(settings.model), settings)
    engine.start()
    try:
        assert engine.batcher.ready.wait(60)
        client = create_app(settings, engine).test_client()
        info = client.get("/v1/model").get_json()
        assert (info["format"], info["precision"], info["runtime"]) == (
            "pt2",
            "int8",
            "aotinductor",
        )
        assert info["runner"] == "ctypes"
        assert client.get("/v2/models/tiny").get_json()["platform"] == "pytorch_pt2"
        response = client.post("/predict", data=image_bytes(), content_type="image/jpeg")
        assert response.status_code == 200 and len(response.get_json()["predictions"]) == 3
    finally:
        engine.stop(10)


def test_export_options_are_checked_before_any_work():
    from app.export.cli import main

    with pytest.raises(SystemExit):
        main(["--precision", "int8"])  # no --calibrate
    with pytest.raises(SystemExit):
        main(["--precision", "bf16"])  # TorchScript is exported in fp32
    with pytest.raises(SystemExit):
        main(["--precision", "int8", "--calibrate", ".", "--min-agreement", "90"])  # a fraction


@pytest.mark.integration
def test_gunicorn_serves_an_int8_package_from_the_master(packages, gunicorn):
    with gunicorn(workers=2, model=packages["int8"], max_batch=MAX_BATCH) as srv:
        infos = {}
        for _ in range(40):
            info = requests.get(f"{srv.url}/v1/model", timeout=10).json()
            infos[info["worker"]["pid"]] = info
        runs = {(i["format"], i["precision"], i["runner"]) for i in infos.values()}
        assert runs == {("pt2", "int8", "ctypes")}  # each worker's self-check passed after fork
        assert all(i["worker"]["torch_threads"] == 1 for i in infos.values())
        data = image_bytes(seed=3)

        def predict(_: int) -> list[dict]:
            response = requests.post(f"{srv.url}/predict", data=data, headers=JPEG, timeout=30)
            return response.json()["predictions"]

        with ThreadPoolExecutor(8) as pool:  # concurrent: batches of several sizes form
            answers = list(pool.map(predict, range(24)))
        for answer in answers:  # whichever worker and batch size: the same answer
            assert [p["index"] for p in answer] == [p["index"] for p in answers[0]]
            for p, q in zip(answer, answers[0], strict=True):
                assert abs(p["score"] - q["score"]) < 1e-4
        metrics = requests.get(f"{srv.url}/metrics", timeout=10).text
        info_line = re.search(r"^wanwu_model_info\{.*$", metrics, re.M).group(0)
        assert 'format="pt2"' in info_line and 'precision="int8"' in info_line


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_a_cuda_package_is_opened_by_the_worker_and_matches_the_cpu(packages, tmp_path):
    path = tmp_path / "tiny-cuda.pt2"
    torch.manual_seed(0)
    pt2.compile_package(TinyNet(), path, "fp32", MAX_BATCH, INPUT_SPEC["crop"], device="cuda")
    manifest_like(packages["fp32"], path, device="cuda")
    settings = make_settings(path, device="cuda", max_batch=MAX_BATCH)
    engine = Engine(Classifier.load(path), settings)
    # What the master does leaves a CUDA package unopened (this test compiled on CUDA itself).
    assert not engine.classifier.module.loaded
    engine.start()
    try:
        assert engine.batcher.ready.wait(120)
        reference = Classifier.load(packages["fp32"])
        reference.prepare(torch.device("cpu"), "fp32")
        x = batch_of(3)
        torch.testing.assert_close(engine.classifier(x), reference(x), atol=1e-4, rtol=0)
    finally:
        engine.stop(30)


@pytest.mark.integration
def test_a_conflicting_precision_stops_start_up_with_the_fix(packages, gunicorn):
    srv = gunicorn(workers=1, model=packages["int8"], max_batch=MAX_BATCH, precision="bf16")
    with pytest.raises(RuntimeError, match="WANWU_PRECISION=bf16 conflicts"):
        srv.start(timeout=60)


# -- the GIL-free runner (app/backends/aoti.py) and int8 agreement ---------------------------------


def channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def test_the_gil_free_runner_answers_exactly_as_torchs_loader(packages):
    for precision in ("fp32", "int8"):
        package = served.Package(packages[precision], read_manifest(packages[precision]))
        package.load()
        assert package.runner == "unchecked"  # the first call decides, in the worker
        loader = torch._inductor.aoti_load_package(str(packages[precision]))
        for n in (1, 3, MAX_BATCH):
            x = channels_last(batch_of(n))
            assert torch.equal(package(x), loader(x))
        assert package.runner == "ctypes"


def test_the_gil_free_runner_refuses_input_it_was_not_compiled_for(packages):
    runner = aoti.Runner(packages["int8"], INPUT_SPEC["crop"], torch.float32, MAX_BATCH)
    crop = INPUT_SPEC["crop"]
    good = channels_last(batch_of(2))
    assert runner(good).shape == (2, 1000)
    for bad in (
        good.contiguous(),  # right shape, wrong strides
        good.double(),
        channels_last(torch.zeros(2, 3, 32, 32)),
        channels_last(torch.zeros(MAX_BATCH + 1, 3, crop, crop)),
        channels_last(torch.zeros(0, 3, crop, crop)),
        torch.zeros(3, crop, crop),
    ):
        with pytest.raises(ValueError, match="takes channels-last"):
            runner(bad)


def without_symbol(source: Path, path: Path, symbol: bytes) -> None:
    """Copy the package `source` to `path` with `symbol` renamed in its .so, as if never built."""
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w") as copy:
        for info in original.infolist():
            data = original.read(info)
            if info.filename.endswith(".so"):
                assert symbol + b"\0" in data
                data = data.replace(symbol + b"\0", symbol[:-1] + b"_\0")
            copy.writestr(info, data)
    manifest_like(source, path)


def test_a_package_the_runner_cannot_run_is_served_by_torchs_loader_and_says_so(
    packages, tmp_path, caplog
):
    path = tmp_path / "older.pt2"
    without_symbol(packages["int8"], path, b"AOTInductorGetLastError")  # torch's loader copes
    settings = make_settings(path, max_batch=MAX_BATCH)
    with caplog.at_level(logging.WARNING, logger="app.backends.pt2"):
        engine = Engine(Classifier.load(settings.model), settings)
    assert "lacks AOTInductorGetLastError" in caplog.text and "holds the GIL" in caplog.text
    engine.start()
    try:
        assert engine.batcher.ready.wait(60)
        client = create_app(settings, engine).test_client()
        assert client.get("/v1/model").get_json()["runner"] == "torch"
        response = client.post("/predict", data=image_bytes(), content_type="image/jpeg")
        assert response.status_code == 200 and len(response.get_json()["predictions"]) == 3
    finally:
        engine.stop(10)


class NearTie(torch.nn.Module):
    """Two classes whose weights differ by less than half an int8 step: fp32 always answers
    class 1 (its logit is larger by 0.001 x a positive feature), int8 sees an exact tie (0)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, kernel_size=16, stride=16)
        self.fc = torch.nn.Linear(8, 2)
        with torch.no_grad():
            self.conv.bias[7] = 1.0  # feature 7 stays positive
            row = torch.tensor([0.5, 0.3, -0.2, 0.1, 0.4, -0.3, 0.2, 0.0])  # int8 step 0.5/127
            self.fc.weight.copy_(torch.stack([row, row + torch.eye(8)[7] * 1e-3]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(torch.nn.functional.adaptive_avg_pool2d(self.conv(x), 1))
        return self.fc(torch.flatten(features, 1))


def test_an_int8_package_that_disagrees_with_fp32_is_refused_and_removed(
    calibration_dir, tmp_path, caplog
):
    torch.manual_seed(0)
    images, _ = pt2.calibration_set(calibration_dir, INPUT_SPEC)
    out = tmp_path / "ties-int8.pt2"
    judged = len(range(CALIBRATION_IMAGES)[:: pt2.HOLD_OUT_EVERY])  # 5 of the 24
    refusal = f"on only 0 of {judged} held-out images"
    with caplog.at_level(logging.INFO, logger="app.export.pt2"):
        with pytest.raises(pt2.AgreementError, match=refusal):
            pt2.compile_package(NearTie(), out, "int8", MAX_BATCH, INPUT_SPEC["crop"], images)
    assert f"agrees with fp32 on 0 of {judged} held-out" in caplog.text  # printed at export
    assert not out.exists()
