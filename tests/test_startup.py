"""Start-up as a user meets it: real `gunicorn -c gunicorn.conf.py`, settings, Ctrl-C, counts."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from app.engine import MODEL_THREAD_NAME
from benchkit.server import ROOT, GunicornServer
from loadtest import headless
from tests.conftest import save_tiny_model

pytestmark = pytest.mark.integration


def run_gunicorn(env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Gunicorn as `make serve` starts it, from `cwd` (this checkout's app, whatever the cwd)."""
    return subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"WANWU_WORKERS": "two"}, "WANWU_WORKERS='two' is not a valid int"),
        ({"WANWU_MAX_BATCH": "0"}, "WANWU_MAX_BATCH must be between 1 and 256 (got 0)"),
        # As on a read-only root: the metrics folder cannot be made.
        (
            {"PROMETHEUS_MULTIPROC_DIR": str(ROOT / "pyproject.toml" / "metrics")},
            "pyproject.toml/metrics: Not a directory; it must be a writable folder",
        ),
        # A misspelt repository must not serve the default model instead.
        (
            {"WANWU_MODEL_REPO": "repo"},
            "WANWU_MODEL_REPO is not a wanwu setting (did you mean WANWU_MODEL_REPOSITORY?)",
        ),
    ],
)
def test_a_bad_setting_stops_start_up_with_one_line(env, says):
    result = run_gunicorn(env)
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 1, lines
    assert len(lines) == 1 and lines[0].startswith("wanwu: ") and says in lines[0], lines


def test_a_torchserve_config_file_is_named(tmp_path):
    (tmp_path / "config.properties").write_text("inference_address=http://0.0.0.0:8080\n")
    # A missing model ends start-up right after the settings are read: nothing is served.
    result = run_gunicorn({"WANWU_MODEL": "absent.pt"}, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "config.properties is TorchServe's and wanwu does not read it" in output
    assert "docs/MIGRATING.md" in output and "Traceback" not in output, output


def warming_workers(server: GunicornServer) -> list[int]:
    """Workers warming up: their model thread, named as warm-up begins, exists (it is started
    after the worker's stop-signal handlers are in place)."""
    warming = []
    for pid in server.worker_pids():
        for comm in glob.glob(f"/proc/{pid}/task/*/comm"):
            try:
                if Path(comm).read_text().strip() == MODEL_THREAD_NAME:
                    warming.append(pid)
                    break
            except OSError:  # the thread ended meanwhile
                pass
    return warming


# Exit within this many seconds of the signal: generous for a slow, shared machine (1 s is
# typical); warm-up of batch sizes 1..32 takes several times longer (its log line must not
# appear: a worker that waited for it would log it).
STOP_BOUND_S = 5.0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_during_warm_up_ends_the_service_at_once(real_model_path, sig, gunicorn):
    server = gunicorn(workers=2, model=real_model_path, max_batch=32)
    server.launch()
    try:
        deadline = time.monotonic() + 120
        while len(warming_workers(server)) < server.workers:
            assert server.proc.poll() is None and time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        # As a terminal's Ctrl-C does: the signal reaches the master and every worker.
        pids = [server.pid, *server.worker_pids()]
        sent = time.monotonic()
        for pid in pids:
            os.kill(pid, sig)
        status = server.proc.wait(timeout=60)
        took = time.monotonic() - sent
    finally:
        server.stop()
    log = server.log()
    assert status == 0, log
    assert took < STOP_BOUND_S, f"{took:.2f} s\n{log}"
    assert "warmed up" not in log, log
    for trouble in ("Traceback", "release unlocked lock", "terminate called", "failed to boot"):
        assert trouble not in log, log


# Imported by every Python process started with its folder on PYTHONPATH: an exit handler that
# leaves a file named for the process. Forked workers inherit it from the master.
TEARDOWN_MARKER = """
import atexit, os
atexit.register(lambda: open(os.path.join(os.environ["TEARDOWN_MARKS"], str(os.getpid())), "w"))
"""


def test_sigterm_on_a_warm_idle_server_skips_every_interpreter_teardown(
    tiny_model_path, tmp_path, gunicorn
):
    """The master and each worker end at once after their exit hooks: no process runs Python's
    teardown (seconds of freeing a torch heap object by object; scripts/stop_time.py times it)."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(TEARDOWN_MARKER)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {"PYTHONPATH": str(tmp_path / "site"), "TEARDOWN_MARKS": str(marks)}
    # The marker works: a plain interpreter leaves its file.
    plain = subprocess.run([sys.executable, "-c", "pass"], env={**os.environ, **env}, timeout=60)
    assert plain.returncode == 0 and len(list(marks.iterdir())) == 1
    (next(marks.iterdir())).unlink()
    server = gunicorn(workers=2, model=tiny_model_path)
    server.env.update(env)
    with server:
        workers = server.worker_pids()
        assert requests.post(f"{server.url}/predict", data=b"", timeout=30).status_code == 400
        server.signal(signal.SIGTERM)
        assert server.proc.wait(timeout=60) == 0, server.log()
    assert len(workers) == 2 and list(marks.iterdir()) == [], server.log()
    assert server.log().count("Worker exiting") == 2 and "Traceback" not in server.log()


def test_counts_settings_and_a_non_default_model(tmp_path, monkeypatch, gunicorn):
    """Default worker count, TorchServe's view, and the load-test mix against an English-only
    four-class model."""
    model = save_tiny_model(
        tmp_path / "shapes.pt", {"en": ["circle", "square", "star", "line"]}, trained=True
    )
    server = gunicorn(workers=2, model=model, max_batch=4, management=True, admin_keys="k")
    # The service chooses the count itself (one per usable CPU): give it two CPUs to count.
    del server.env["WANWU_WORKERS"]
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs: the default count is one worker per CPU")
    monkeypatch.setattr(server, "launch", _with_affinity(server.launch, cpus[:2]))
    with server:
        ready = requests.get(f"{server.url}/readyz", timeout=10).json()
        admin = {"Authorization": "Bearer k"}
        described = requests.get(
            f"{server.management_url}/models/shapes", headers=admin, timeout=10
        ).json()[0]
        loadtest = headless.run(server.url, tmp_path, seconds=6)
    assert ready["workers"] == ready["workers_ready"] == 2, ready
    assert described["minWorkers"] == described["maxWorkers"] == 2, described
    rows = headless.stats(tmp_path)
    assert int(rows["/predict [raw]"]["Request Count"]) > 0, loadtest.stderr[-2000:]
    assert int(rows["Aggregated"]["Failure Count"]) == 0, headless.failures(tmp_path)
    assert loadtest.returncode == 0, loadtest.stderr[-2000:]


def _with_affinity(launch, cpus: list[int]):
    """Run `launch` with this process restricted to `cpus`, which the child inherits."""

    def launch_on_cpus() -> GunicornServer:
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, cpus)
        try:
            return launch()
        finally:
            os.sched_setaffinity(0, before)

    return launch_on_cpus


def make_serve_plan(tmp_path: Path, **env: str) -> str:
    """What `make serve` would run (make -n: nothing is installed or started)."""
    result = subprocess.run(
        # -W: as if pyproject.toml had changed, so the install shows even where .venv is made.
        ["make", "-n", "-W", "pyproject.toml", "serve", f"MODEL={tmp_path / 'missing.pt'}"],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "WANWU_MODEL"} | env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout


def test_make_serve_installs_the_runtime_set_and_builds_only_the_model_it_serves(tmp_path):
    default = make_serve_plan(tmp_path)
    assert f"app.export --out {tmp_path / 'missing.pt'}" in default, default
    assert "gunicorn -c gunicorn.conf.py" in default
    assert "[dev]" not in default, default
    chosen = make_serve_plan(tmp_path, WANWU_MODEL="models/digits.pt")
    assert "app.export" not in chosen and "gunicorn -c gunicorn.conf.py" in chosen, chosen


def test_make_serve_takes_torch_from_torch_index_alone_and_refuses_gpu_packages(tmp_path):
    index = "file:///srv/torch-cpu/simple"
    plan = make_serve_plan(tmp_path, TORCH_INDEX=index)
    torch_first = f"pip install --progress-bar off --index-url {index} torch torchvision"
    assert torch_first in plan, plan
    assert plan.index(torch_first) < plan.index("pip install --progress-bar off -e .")
    assert "TORCH_INDEX still brought GPU-only packages" in plan  # checked after the install
    plain = make_serve_plan(tmp_path)
    assert "--index-url" not in plain and "GPU-only" not in plain, plain


def test_make_serve_int8_adds_the_models_next_version_under_its_name(tmp_path):
    """MODEL's int8 package goes into REPO as its next version, named as MODEL; REPO serves."""
    repo = tmp_path / "repo"
    plan = subprocess.run(
        ["make", "-n", "serve-int8", "MODEL=pets", f"REPO={repo}", "CALIBRATE=p/"]
        + ["FROM=--arch resnet50 --weights pets.pth"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "app.export --arch resnet50 --weights pets.pth --name pets --precision int8" in plan
    assert f"--out {repo}/pets/$(( ${{last:-0}} + 1 ))/pets.pt2" in plan, plan
    assert "--allow-untrained" not in plan
    assert f"WANWU_MODEL_REPOSITORY={repo}" in plan
