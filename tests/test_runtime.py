"""Threads, CPU sets, device and precision choice, and the engine on each precision."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from app import runtime
from app.engine import MODEL_THREAD_NAME, Engine
from app.model import Classifier
from app.settings import Settings, SettingsError, visible_gpus
from tests.conftest import ROOT, make_settings

requires_bf16 = pytest.mark.skipif(not runtime.cpu_supports_bf16(), reason="no native bf16 CPU")
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_worker_slots_get_disjoint_cpu_sets():
    cpus = list(range(8))
    sets = [runtime.cpu_set(slot, 2, cpus) for slot in range(4)]
    assert sets == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert runtime.cpu_set(4, 2, cpus) == [0, 1]  # more workers than CPU sets: wrap around
    assert runtime.free_slot({0, 1, 3}) == 2 and runtime.free_slot(set()) == 0


def test_auto_device_needs_no_cuda_call(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == 0
    assert runtime.planned_device("auto") == torch.device("cpu")
    assert runtime.planned_device("cuda:1") == torch.device("cuda", 1)


def test_asking_for_cuda_without_a_gpu_fails_clearly(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SettingsError, match="no CUDA device is available"):
        runtime.worker_device(torch.device("cuda"), "cuda", 0)
    assert runtime.worker_device(torch.device("cuda"), "auto", 0) == torch.device("cpu")


def test_precision_rules(monkeypatch):
    cpu = torch.device("cpu")
    with pytest.raises(SettingsError, match="fp16 needs a CUDA device"):
        runtime.resolve_precision("fp16", cpu)
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: False)
    with pytest.raises(SettingsError, match="AVX512-BF16 or AMX"):
        runtime.resolve_precision("bf16", cpu)
    assert runtime.resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: True)
    assert runtime.resolve_precision("auto", cpu) == "bf16"
    assert runtime.resolve_precision("auto", torch.device("cuda")) == "fp16"


def test_auto_is_the_default_and_says_why_it_chose(monkeypatch, tiny_model_path):
    default = next(f.default for f in fields(Settings) if f.name == "precision")
    assert default == "auto"  # the suite itself runs fp32 (conftest.py)
    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: True)
    settings = make_settings(tiny_model_path, precision=default, device="cpu")
    engine = Engine(Classifier.load(tiny_model_path), settings)
    assert (engine.precision, engine.precision_reason) == (
        "bf16",
        "WANWU_PRECISION=auto: this CPU has native bf16 (AVX512-BF16 or AMX)",
    )
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: False)
    assert runtime.precision_reason("auto", "fp32", cpu) == (
        "WANWU_PRECISION=auto: this CPU has no native bf16 (AVX512-BF16 or AMX)"
    )
    assert runtime.precision_reason("auto", "fp16", torch.device("cuda")) == (
        "WANWU_PRECISION=auto: fp16 on CUDA"
    )
    assert runtime.precision_reason("fp32", "fp32", cpu) == "WANWU_PRECISION=fp32"
    assert runtime.precision_reason("fp32", "int8", cpu) == (
        "the artifact runs in int8 whatever WANWU_PRECISION (fp32) says"
    )


def test_engine_refuses_fp16_on_cpu_at_start_up(tiny_model_path):
    settings = make_settings(tiny_model_path, precision="fp16", device="cpu")
    with pytest.raises(SettingsError, match="fp16"):
        Engine(Classifier.load(tiny_model_path), settings)


@requires_bf16
def test_bf16_agrees_with_fp32(real_model_path):
    x = torch.rand(4, 3, 224, 224)
    outputs = {}
    for precision in ("fp32", "bf16"):
        classifier = Classifier.load(real_model_path)
        classifier.prepare(torch.device("cpu"), precision)
        outputs[precision] = classifier(x)
    assert outputs["bf16"].dtype == torch.float32  # probabilities always come back as fp32
    torch.testing.assert_close(outputs["bf16"], outputs["fp32"], atol=5e-3, rtol=0)


def test_cpu_fusion_runs_fused_kernels_with_the_same_answers(real_model_path):
    x = torch.rand(3, 3, 224, 224)
    outputs = {}
    for fuse in (False, True):
        classifier = Classifier.load(real_model_path)
        classifier.prepare(torch.device("cpu"), "fp32", fuse=fuse)
        classifier.warm_up(3)
        outputs[fuse] = classifier(x)
        graph = str(torch.jit.last_executed_optimized_graph())
        assert ("oneDNNFusionGroup" in graph) is fuse, graph
    torch.testing.assert_close(outputs[True], outputs[False], atol=1e-5, rtol=0)


@requires_cuda
def test_cuda_engine_matches_cpu_and_the_master_never_touched_cuda(real_model_path):
    engine = Engine(Classifier.load(real_model_path), make_settings(real_model_path, device="cuda"))
    assert not torch.cuda.is_initialized()  # building the engine is what the master does
    engine.start()
    try:
        assert engine.batcher.ready.wait(120)
        assert engine.classifier.device.type == "cuda"
        reference = Classifier.load(real_model_path)
        reference.prepare(torch.device("cpu"), "fp32")
        x = torch.rand(3, 3, 224, 224)
        with engine.batcher.reserve(3, 1e12) as reservation:
            futures = [reservation.submit(image) for image in x]
        got = torch.stack([f.result(60).output for f in futures])
        torch.testing.assert_close(got, reference(x), atol=2e-3, rtol=0)
    finally:
        engine.stop(30)


def test_workers_pin_only_cpus_they_own(monkeypatch, tiny_model_path):
    affinity = sorted(os.sched_getaffinity(0))
    settings = make_settings(tiny_model_path, pin_cpus=True, threads=torch.get_num_threads())
    pinned = []
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cpus: pinned.append(cpus))
    # A CPU quota smaller than the affinity set (a container on a big node): no pinning,
    # or every replica would crowd onto the same first CPUs.
    monkeypatch.setattr(runtime, "usable_cpus", lambda: len(affinity) - 1)
    assert runtime.configure_worker(settings, slot=0)["cpus"] is None and not pinned
    monkeypatch.setattr(runtime, "usable_cpus", lambda: len(affinity))
    assert runtime.configure_worker(settings, slot=0)["cpus"] == pinned[0]


def test_the_model_thread_is_named_for_the_os(start_app):
    """top -H and scripts/profile_service.py tell the model thread by its OS-level name."""
    engine = start_app().extensions["wanwu.core"].engine
    tid = engine.batcher._thread.native_id
    assert Path(f"/proc/self/task/{tid}/comm").read_text().strip() == MODEL_THREAD_NAME


STOPPING = """
import atexit, sys
from app import runtime
atexit.register(lambda: print("teardown", flush=True))
{how}
"""


@pytest.mark.parametrize(
    ("how", "status", "teardown"),
    [
        # A worker told to stop: SystemExit(0) on its way through worker_exit.
        ("try:\n    sys.exit(0)\nfinally:\n    runtime.exit_if_stopping_cleanly()", 0, False),
        # The master on SIGTERM: on_exit runs while Gunicorn handles its StopIteration.
        (
            "try:\n    raise StopIteration\nexcept StopIteration:\n"
            "    runtime.exit_if_stopping_cleanly()\n    sys.exit(0)",
            0,
            False,
        ),
        # A worker that failed to boot keeps its exit code, and Python's way out.
        ("try:\n    sys.exit(3)\nfinally:\n    runtime.exit_if_stopping_cleanly()", 3, True),
        # Called with nothing ending: it returns.
        ("runtime.exit_if_stopping_cleanly()", 0, True),
    ],
    ids=["worker stop", "master stop", "boot error", "nothing ending"],
)
def test_a_clean_stop_skips_the_interpreters_teardown(how, status, teardown):
    done = subprocess.run(
        [sys.executable, "-c", STOPPING.format(how=how)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == status, done.stderr
    assert ("teardown" in done.stdout) is teardown, done.stdout + done.stderr
