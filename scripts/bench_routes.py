#!/usr/bin/env python3
"""wanwu through each protocol on one server: /predict, TorchServe, OIP v2 over HTTP and gRPC.

One Gunicorn, the same photos, the same closed-loop clients. At each --concurrency the routes
take turns, --rounds times, so the machine's drift falls on each alike. Each request carries
one raw JPEG: a raw body to /predict, TorchServe's POST /predictions/{model} as its docs send
it, an OIP raw binary request (Inference-Header-Content-Length: 0), and a gRPC ModelInfer from
tritonclient.grpc: a connection per client, spread over every worker on WANWU_GRPC_BIND, and
all clients on one connection, so on one worker (what one gRPC process per host would serve).
Prints req/s and latency per route and round, and each route's total answers relative to
/predict's.
"""

from __future__ import annotations

import sys
from collections import defaultdict

from app.artifact import read_manifest
from benchkit import options
from benchkit.bench import header, load_images
from benchkit.grpcload import grpc_infer, reserved_port, wait_listening
from benchkit.loadgen import oip, raw_jpeg, torchserve
from benchkit.measure import measure, settle


def main() -> int:
    parser = options.parser(__doc__, server=True, concurrency="8,32", seconds=10, rounds=3)
    parser.add_argument(
        "--routes", help="comma-separated routes to run (default: all); ratios need /predict"
    )
    args = parser.parse_args()
    settings = options.server_settings(args.set)
    images = load_images(args.images)
    name = read_manifest(args.model)["name"]
    print(header("Routes (scripts/bench_routes.py)"))
    print(
        f"- server: workers={settings.worker_processes} torch_threads={settings.torch_threads} "
        f"max_batch={settings.max_batch} max_wait_ms={settings.max_wait_ms}; "
        f"{args.seconds:g} s per route, round and level; {len(images)} photos\n"
    )
    print("| clients | round | route | req/s | p50 ms | p99 ms | errors |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    answered: dict[tuple[int, str], int] = defaultdict(int)
    with (
        reserved_port() as port,
        options.start_server(args.model, [*args.set, f"GRPC_BIND=127.0.0.1:{port}"]) as srv,
    ):
        wait_listening(srv.worker_pids(), port)
        routes = {
            "/predict": raw_jpeg(srv.url, images),
            "/predictions": torchserve(srv.url, images, name),
            "/v2 infer": oip(srv.url, images, name),
            "gRPC ModelInfer": grpc_infer(f"127.0.0.1:{port}", images, name),
            # What one gRPC process per host would give: every call on one worker.
            "gRPC one connection": grpc_infer(f"127.0.0.1:{port}", images, name, shared=True),
        }
        if args.routes:
            routes = {route: routes[route] for route in args.routes.split(",")}
        for make in routes.values():
            settle(make)
        for clients in args.concurrency:
            for n in range(1, args.rounds + 1):
                for route, make in routes.items():
                    row = measure(make, clients, args.seconds)
                    answered[clients, route] += sum(r.status == 200 for r in row.records)
                    print(
                        f"| {clients} | {n} | {route} | {row.rate:.1f} | {row.p50:.0f} | "
                        f"{row.p99:.0f} | {row.errors} |",
                        flush=True,
                    )
    print("\nanswers relative to /predict over all rounds:")
    for clients in sorted({c for c, _ in answered}):
        base = answered[clients, "/predict"]
        ratios = ", ".join(
            f"{route} {answered[clients, route] / base:.3f}" for route in routes if base
        )
        print(f"- {clients} clients: {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
