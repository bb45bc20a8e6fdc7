"""Generate wanwu's Grafana dashboard: `python deploy/monitoring/dashboard.py > dashboard.json`.

Built with Grafana's own grafana-foundation-sdk (a dev dependency), never hand-edited:
tests/test_monitoring.py regenerates it and compares, and asks a real Prometheus scraping a
real Gunicorn for every query below. Thresholds drawn on the panels are the alerts' in
rules.yml: p99 under 200 ms, errors under 0.5 %, memory under 90 % of the limit.
"""

from __future__ import annotations

import argparse
from types import ModuleType

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders.common import GraphThresholdsStyleConfig
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import GraphTresholdsStyleMode  # the SDK's spelling
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    VariableRefresh,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

# Routes that classify images, one per protocol (Flask's rule strings and gRPC's method path,
# as metrics label them); rules.yml's WanwuP99LatencyHigh selects the same.
INFERENCE = (
    'route=~"/predict|/predictions/.*|/v2/models/.*/infer'
    '|/inference.GRPCInferenceService/ModelInfer"'
)
# Server-side failures: HTTP's 5xx and gRPC's codes of the same kind (a client's mistakes,
# 4xx and INVALID_ARGUMENT, RESOURCE_EXHAUSTED and the like, are not); as WanwuErrorRatioHigh.
ERRORS = 'status=~"5..|UNAVAILABLE|DEADLINE_EXCEEDED|INTERNAL|UNKNOWN|DATA_LOSS"'
# Refusals that ask the client to come back: HTTP's and gRPC's.
REFUSALS = 'status=~"408|429|503|504|RESOURCE_EXHAUSTED|UNAVAILABLE|DEADLINE_EXCEEDED"'
WINDOW = "$__rate_interval"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
# Every query reads the services and instances picked in the `job` and `instance` variables.
SCOPE = 'job=~"$job", instance=~"$instance"'


def series(name: str, selector: str = "") -> str:
    """`name` within the picked jobs and instances, and `selector` when given."""
    return f"{name}{{{SCOPE}{', ' + selector if selector else ''}}}"


def rate(name: str, by: str = "", selector: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} (rate({series(name, selector)}[{WINDOW}]))"


def quantile(q: float, histogram: str, selector: str = "", by: str = "") -> str:
    grouping = ", ".join(filter(None, (by, "le")))
    return f"histogram_quantile({q}, {rate(f'{histogram}_bucket', grouping, selector)})"


def gauge(name: str, by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} ({series(name)})"


def variable(name: str, query_text: str) -> dashboard.QueryVariable:
    """A variable of every value Prometheus has for a label (all of them picked at first)."""
    return (
        dashboard.QueryVariable(name)
        .datasource(DATASOURCE)
        .query(query_text)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
    )


def query(expr: str, legend: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).datasource(DATASOURCE)


def panel(
    kind: ModuleType,
    title: str,
    queries: list[prometheus.Dataquery],
    width: int = 8,
    height: int = 8,
):
    """A panel of `kind` (a builder module) showing `queries`, lettered A, B, C... as Grafana's."""
    built = kind.Panel().title(title).datasource(DATASOURCE).span(width).height(height)
    for letter, target in zip("ABCDEFGH", queries, strict=False):
        built = built.with_target(target.ref_id(letter))
    return built


def graph(title: str, unit: str, *queries: prometheus.Dataquery, limit: float | None = None):
    """A time series panel; `limit` draws the alert's threshold as a red line."""
    built = panel(timeseries, title, list(queries)).unit(unit)
    if limit is not None:
        steps = [Threshold(None, "green"), Threshold(limit, "red")]  # None: from -infinity
        built = built.thresholds(
            dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps)
        ).thresholds_style(GraphThresholdsStyleConfig().mode(GraphTresholdsStyleMode.LINE))
    return built


def build() -> dashboard.Dashboard:
    """The dashboard: traffic and errors, latency, batching, capacity, models and versions."""
    requests_by_status = rate("wanwu_requests_total", "route, status")
    errors = rate("wanwu_requests_total", selector=ERRORS)
    all_requests = rate("wanwu_requests_total")
    latency = [
        query(quantile(q, "wanwu_request_duration_seconds", INFERENCE), f"p{round(q * 100)}")
        for q in (0.5, 0.9, 0.99)
    ]
    by_version = "model, version"
    model_requests = rate("wanwu_model_requests_total", by_version)
    return (
        dashboard.Dashboard("wanwu")
        .uid("wanwu")
        .tags(["wanwu", "image-classification"])
        .refresh("30s")
        .time("now-1h", "now")
        .with_variable(dashboard.DatasourceVariable("datasource").type("prometheus"))
        .with_variable(variable("job", "label_values(wanwu_workers_configured, job)"))
        .with_variable(
            variable("instance", 'label_values(wanwu_workers_configured{job=~"$job"}, instance)')
        )
        .with_row(dashboard.Row("Traffic and errors"))
        .with_panel(
            graph(
                "Requests/s by route and status",
                "reqps",
                query(requests_by_status, "{{route}} {{status}}"),
            )
        )
        .with_panel(
            graph(
                "Error ratio (5xx and gRPC server errors of all answers)",
                "percentunit",
                # No error series yet is a ratio of 0, not no data.
                query(f"({errors} or {all_requests} * 0) / {all_requests}", "error ratio"),
                limit=0.005,
            )
        )
        .with_panel(
            graph(
                "Refusals: 408, 429, 503, 504 (gRPC's too) and early closes",
                "reqps",
                query(rate("wanwu_requests_total", "status", REFUSALS), "{{status}}"),
                query(rate("wanwu_connections_closed_total", "reason"), "closed: {{reason}}"),
            )
        )
        .with_row(dashboard.Row("Latency"))
        .with_panel(graph("Inference request latency", "s", *latency, limit=0.2))
        .with_panel(
            graph(
                "Queue wait and forward pass (p50, p99)",
                "s",
                query(quantile(0.5, "wanwu_queue_wait_seconds"), "queue wait p50"),
                query(quantile(0.99, "wanwu_queue_wait_seconds"), "queue wait p99"),
                query(quantile(0.99, "wanwu_inference_seconds"), "forward pass p99"),
            )
        )
        .with_panel(
            graph(
                "Queue depth and requests in flight",
                "short",
                query(gauge("wanwu_queue_depth"), "images queued"),
                query(gauge("wanwu_requests_in_flight"), "requests in flight"),
            )
        )
        .with_row(dashboard.Row("Batching and throughput"))
        .with_panel(
            graph(
                "Batch size",
                "short",
                query(f"{rate('wanwu_batch_size_sum')} / {rate('wanwu_batch_size_count')}", "mean"),
                query(quantile(0.9, "wanwu_batch_size"), "p90"),
            )
        )
        .with_panel(
            graph("Images classified/s", "short", query(rate("wanwu_images_total"), "images/s"))
        )
        .with_panel(
            graph(
                "Images refused by the batcher/s",
                "short",
                query(rate("wanwu_rejected_total", "reason"), "{{reason}}"),
            )
        )
        .with_row(dashboard.Row("Capacity"))
        .with_panel(
            graph(
                "Server memory against its limit",
                "bytes",
                query(gauge("wanwu_memory_usage_bytes", "instance"), "used {{instance}}"),
                query(gauge("wanwu_memory_limit_bytes", "instance"), "limit {{instance}}"),
                query(f"0.9 * {gauge('wanwu_memory_limit_bytes', 'instance')}", "alert at 90 %"),
            )
        )
        .with_panel(
            graph(
                "Workers: ready, configured, exits",
                "short",
                query(gauge("wanwu_workers_ready", "instance"), "ready {{instance}}"),
                query(gauge("wanwu_workers_configured", "instance"), "configured {{instance}}"),
                query(
                    f"sum by (instance) (increase({series('wanwu_worker_exits_total')}[{WINDOW}]))",
                    "exits {{instance}}",
                ),
            )
        )
        .with_panel(
            panel(
                stat,
                "Open connections and buffered request bytes",
                [
                    query(gauge("wanwu_connections_open"), "connections"),
                    query(gauge("wanwu_buffered_request_bytes"), "buffered bytes"),
                ],
            )
        )
        .with_row(dashboard.Row("Models and versions (a gray release)"))
        .with_panel(
            graph(
                "Requests/s by model and version",
                "reqps",
                query(model_requests, "{{model}} v{{version}}"),
            )
        )
        .with_panel(
            graph(
                "Traffic share by model and version: served and configured",
                "percentunit",
                query(
                    f"{model_requests} / ignoring (version) group_left "
                    f"{rate('wanwu_model_requests_total', 'model')}",
                    "{{model}} v{{version}} served",
                ),
                query(
                    f"max by (model, version) ({series('wanwu_model_traffic_share')})",
                    "{{model}} v{{version}} configured",
                ),
            )
        )
        .with_panel(
            graph(
                "Forward pass and queue wait p99 by model and version",
                "s",
                query(
                    quantile(0.99, "wanwu_inference_seconds", by=by_version),
                    "{{model}} v{{version}} forward pass",
                ),
                query(
                    quantile(0.99, "wanwu_queue_wait_seconds", by=by_version),
                    "{{model}} v{{version}} queue wait",
                ),
            )
        )
        .with_panel(
            graph(
                "Images refused or expired/s by model and version (503, 504)",
                "short",
                query(
                    rate("wanwu_rejected_total", f"{by_version}, reason"),
                    "{{model}} v{{version}} {{reason}}",
                ),
            )
        )
        .with_panel(
            panel(
                table,
                "Served model (name, version, trained, device, precision, format)",
                [
                    query(
                        "max by (instance, name, version, classes, trained, device, precision, "
                        f"format) ({series('wanwu_model_info')})",
                        "{{name}} {{version}}",
                    )
                    .instant()
                    .format(PromQueryFormat.TABLE)
                ],
                width=16,
                height=8,
            )
        )
    )


def render() -> str:
    """The dashboard as the JSON file Grafana imports."""
    return JSONEncoder(sort_keys=True, indent=2).encode(build().build()) + "\n"


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print(render(), end="")
