"""deploy/monitoring/: the generated dashboard, the alert rules under promtool, and every panel
query and rule answered by a real Prometheus scraping a real Gunicorn."""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests
import tritonclient.grpc as triton
import yaml
from tritonclient.utils import InferenceServerException

from app.metrics import EARLY_CLOSES
from benchkit import system
from benchkit.grpcload import image_tensor, reserved_port, wait_listening
from benchkit.images import image_bytes
from benchkit.server import free_port
from tests.conftest import ROOT

MONITORING = ROOT / "deploy" / "monitoring"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
WINDOW = "1m"  # what Grafana's $__rate_interval becomes here: the whole test fits in it


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of the generated dashboard, every variable's
    values picked."""
    board = json.loads((MONITORING / "dashboard.json").read_text())
    picked = {"$__rate_interval": WINDOW, "$job": ".*", "$instance": ".*"}  # all picked
    queries = []
    for panel in board["panels"]:
        for target in panel.get("targets") or []:
            expr = target["expr"]
            for variable, value in picked.items():
                expr = expr.replace(variable, value)
            queries.append((panel["title"], expr))
    return queries


def test_dashboard_json_is_what_the_generator_writes():
    generated = subprocess.run(
        [sys.executable, str(MONITORING / "dashboard.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert generated == (MONITORING / "dashboard.json").read_text(), (
        "regenerate: python deploy/monitoring/dashboard.py > deploy/monitoring/dashboard.json"
    )
    titles = " ".join(title for title, _ in panel_queries())
    for topic in ("route and status", "latency", "Error ratio", "Queue depth", "Batch size"):
        assert topic in titles
    for topic in ("Images classified", "memory against its limit", "408, 429, 503, 504", "gRPC"):
        assert topic in titles
    assert "Served model" in titles
    for topic in ("by model and version", "Traffic share", "p99 by model and version"):
        assert topic in titles
    board = json.loads((MONITORING / "dashboard.json").read_text())
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource", "job", "instance"]
    for title, expr in panel_queries():  # each query reads the picked jobs and instances
        assert expr.count('job=~".*", instance=~".*"') >= 1, title


@pytest.mark.needs("promtool")
def test_promtool_checks_the_rules_and_config_and_runs_the_rule_unit_tests():
    promtool = system.find("promtool")
    for args in (
        ["check", "rules", "rules.yml"],
        ["check", "config", "prometheus.yml"],
        ["test", "rules", "rules_test.yml"],
    ):
        done = subprocess.run([promtool, *args], cwd=MONITORING, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", (MONITORING / "rules_test.yml").read_text()))
    alerts = set(re.findall(r"alert: (\w+)", (MONITORING / "rules.yml").read_text()))
    assert len(alerts) == 5 and tested == alerts


def test_server_memory_is_the_cgroups_else_the_process_trees(tmp_path, monkeypatch):
    from app import cgroup, metrics

    def sample(name: str) -> float:
        return next(
            family.samples[0].value
            for family in metrics.ServerMemory().collect()
            if family.name == name
        )

    monkeypatch.setattr(cgroup, "ROOT", str(tmp_path))
    # No cgroup files: this process's PSS (no Gunicorn here) against the machine's memory.
    pss = sample("wanwu_memory_usage_bytes")
    assert 0 < pss < sample("wanwu_memory_limit_bytes") == cgroup.physical_memory()
    (tmp_path / "memory.current").write_text("734003200\n")
    (tmp_path / "memory.max").write_text("max\n")  # a cgroup without a limit: the tree's PSS
    assert sample("wanwu_memory_usage_bytes") != 734003200
    assert sample("wanwu_memory_limit_bytes") == cgroup.physical_memory()
    (tmp_path / "memory.max").write_text("1073741824\n")
    assert sample("wanwu_memory_usage_bytes") == 734003200
    assert sample("wanwu_memory_limit_bytes") == 1073741824


class Prometheus:
    """A real Prometheus on a loopback port, scraping `target` every second."""

    def __init__(self, tmp_path: Path, target: str) -> None:
        config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(MONITORING / "rules.yml")]
        config["scrape_configs"][0]["static_configs"] = [{"targets": [target]}]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = open(tmp_path / "prometheus.log", "wb")
        self.proc = subprocess.Popen(
            [
                system.find("prometheus"),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def api(self, path: str, **params: str) -> object:
        response = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def wait(self, what: str, holds, timeout: float = 30) -> None:  # noqa: ANN001
        """Poll Prometheus until `holds()` is true (its own API's state, never a sleep)."""
        deadline = time.monotonic() + timeout
        while not holds():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.log.flush()
                raise AssertionError(f"Prometheus never reported {what}")
            time.sleep(0.2)

    def ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/-/ready", timeout=5).ok
        except requests.ConnectionError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


@pytest.mark.integration
@pytest.mark.needs("prometheus")
def test_a_real_prometheus_answers_every_panel_and_rule(tiny_model_path, tmp_path, gunicorn):
    held = ExitStack()  # the gRPC port, until the server is gone
    port = held.enter_context(reserved_port())
    server = gunicorn(
        workers=2,
        model=tiny_model_path,
        max_batch=2,
        queue_max=2,
        max_files=4,
        grpc_bind=f"127.0.0.1:{port}",
    ).start()
    prometheus = Prometheus(tmp_path, server.url.removeprefix("http://"))
    try:
        wait_listening(server.worker_pids(), port)
        prometheus.wait("ready", prometheus.ready)
        prometheus.wait("the target up", lambda: prometheus.query('up{job="wanwu"} == 1') != [])
        # Before any request: every counter the dashboard reads exists, at 0.
        for expr, count in (
            ("wanwu_rejected_total == 0", 2),  # overloaded and deadline, of the one version
            ("wanwu_model_requests_total == 0", 1),
            ("sum by (reason) (wanwu_connections_closed_total) == 0", len(EARLY_CLOSES)),
            ("wanwu_rate_limited_total == 0", 1),
        ):
            assert len(prometheus.query(expr)) == count, expr
        refusals(server.url)
        grpc_calls(f"127.0.0.1:{port}")
        image = image_bytes(size=(64, 64))

        def predict(_: int) -> int:
            url = f"{server.url}/predict"
            headers = {"Content-Type": "image/jpeg"}
            return requests.post(url, data=image, headers=headers, timeout=30).status_code

        # A short load, bounded by calls, that lasts until Prometheus has seen images counted
        # in two scrapes (rates need two samples).
        counted = f"sum(increase(wanwu_images_total[{WINDOW}])) > 0"
        with ThreadPoolExecutor(3) as pool:
            for _ in range(100):
                assert set(pool.map(predict, range(6))) <= {200, 503}
                if prometheus.query(counted):
                    break
        assert prometheus.query(counted), "the load ended before two scrapes saw it"

        def answers(expr: str) -> bool:
            result = prometheus.query(expr)
            return bool(result) and all(math.isfinite(float(r["value"][1])) for r in result)

        for title, expr in panel_queries():
            prometheus.wait(f"data for {title!r}: {expr}", lambda e=expr: answers(e))

        # gRPC's calls are inference latency and answers, under their method and code names.
        grpc = f'route="{MODEL_INFER}"'
        for expr in (
            f"wanwu_request_duration_seconds_count{{{grpc}}} > 0",
            f'wanwu_requests_total{{{grpc},status="OK"}} > 0',
            f'wanwu_requests_total{{{grpc},status="NOT_FOUND"}} > 0',
        ):
            prometheus.wait(expr, lambda e=expr: answers(e))

        rules_text = (MONITORING / "rules.yml").read_text()
        for name in sorted(set(re.findall(r"\b(wanwu_\w+|up)\b", rules_text))):
            assert prometheus.query(f'count({{__name__="{name}"}})'), f"no series {name}"

        def rules() -> list[dict]:
            return [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]

        prometheus.wait(
            "every rule evaluated",
            lambda: all(r["lastEvaluation"] > "0001-01-01T00:00:00Z" for r in rules()),
        )
        assert {(r["name"], r["health"], r.get("lastError", "")) for r in rules()} == {
            (name, "ok", "") for name in re.findall(r"alert: (\w+)", rules_text)
        }

        # A worker killed: the master counts its exit, which WanwuWorkersRestarting watches.
        os.kill(server.worker_pids()[0], signal.SIGKILL)
        prometheus.wait("the exit counted", lambda: answers("wanwu_worker_exits_total == 1"))
    finally:
        prometheus.stop()
        server.stop()
        held.close()


def grpc_calls(address: str) -> None:
    """An answered ModelInfer and a refused one (an unknown model), with the real tritonclient."""
    client = triton.InferenceServerClient(address)
    try:
        client.infer("tiny", [image_tensor([image_bytes(size=(32, 32))])])
        with pytest.raises(InferenceServerException, match="not_found|NOT_FOUND|not served"):
            client.infer("absent", [image_tensor([image_bytes(size=(32, 32))])])
    finally:
        client.close()


def refusals(url: str) -> None:
    """One of each refusal the dashboard shows: 503 (queue full) and an early close (413)."""
    files = [("file", (f"{n}.jpg", image_bytes(size=(32, 32), seed=n))) for n in range(3)]
    assert requests.post(f"{url}/predict", files=files, timeout=30).status_code == 503
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
    conn.putrequest("POST", "/predict")
    conn.putheader("Content-Type", "image/jpeg")
    conn.putheader("Content-Length", str(10**9))
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()
