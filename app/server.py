"""Gunicorn's hooks: what the master does before and after the fork, and each worker's life.

The model is loaded once in the master (preload) and shared copy-on-write by forked
workers. The master runs no forward pass, starts no thread pool and touches no CUDA API;
each worker pins its CPUs and threads, picks its device and warms up after the fork.
gunicorn.conf.py imports this module after app.boot has chosen the metrics folder, and its
hooks are one line each calling the function of the same name here, with the settings.
"""

from __future__ import annotations

import gc
import logging
import os
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor

from app import balance, boot, metrics, ratelimit, runtime, tokens
from app.listeners import management_bind
from app.repository.control import Follower
from app.repository.folder import ControlFolder
from app.repository.operations import Management
from app.settings import Settings, short_keys

log = logging.getLogger("wanwu")


def prepare_master(settings: Settings) -> None:
    """Log set-up and warnings, then what every worker shares, made before the fork."""
    runtime.configure_logging(settings.log_level)
    for warning in short_keys(settings):
        log.warning(warning)
    if os.path.exists("config.properties"):
        log.warning(
            "config.properties is TorchServe's and wanwu does not read it; docs/MIGRATING.md "
            '("config.properties, mapped") gives the WANWU_* variable for each property'
        )
    runtime.prepare_master()
    # Room for the slots of a reload's new workers while the old ones finish.
    balance.install(2 * settings.worker_processes)
    # One table every worker shares, made before the fork: the rate limit is exact across workers.
    ratelimit.install(settings.rate_limit)
    tokens.verifier(settings)  # an unreadable token key file stops start-up here, with its name
    metrics.WORKERS_CONFIGURED.set(settings.worker_processes)


def binds(settings: Settings) -> list[str]:
    """The inference listener, then the management API's when it has one: the second, by
    position (app.listeners)."""
    return [settings.bind] + ([management_bind(settings)] if management_bind(settings) else [])


def _registry(server_or_worker):
    """The preloaded app's models (master and workers hold the same application object)."""
    return server_or_worker.app.wsgi().extensions["wanwu.registry"]


def _control(server_or_worker):
    """The control folder (app.repository.folder), once when_ready has made it."""
    management = server_or_worker.app.wsgi().extensions.get("wanwu.management")
    return management.folder if management else None


def on_starting(server, settings: Settings) -> None:
    """Log the effective settings once."""
    server.log.info("wanwu settings: %s", settings.public())


def when_ready(server, settings: Settings) -> None:
    """Publish the preloaded models' plans, and give the app the management calls (before
    the fork: every worker inherits both)."""
    registry = _registry(server)
    # Where the workers follow model changes (app.repository.control), once the models loaded.
    control = ControlFolder.create(registry.plans)
    app = server.app.wsgi()
    app.extensions["wanwu.management"] = Management(registry, control, settings)
    if management_bind(settings):
        server.log.info("management API on %s", management_bind(settings))


def pre_fork(server, worker, settings: Settings) -> None:
    """Give the new worker a free CPU slot and the settings; freeze the heap so fork shares
    it copy-on-write."""
    taken = {getattr(w, "wanwu_slot", -1) for w in server.WORKERS.values()}
    worker.wanwu_slot = runtime.free_slot(taken)
    worker.wanwu_settings = settings
    gc.freeze()


def post_fork(server, worker, settings: Settings) -> None:
    """Pin threads and CPUs (they do not survive fork)."""
    pinned = runtime.configure_worker(settings, worker.wanwu_slot)
    server.log.info("worker %s: %s", worker.pid, pinned)


def post_worker_init(worker, settings: Settings) -> None:
    """Pick the device, start the batcher and accept no connection before the model is warm.

    A fresh worker (a replacement, a reload) would otherwise answer 503 to clients its
    siblings could serve. Heartbeats meanwhile keep the arbiter from timing it out; a warm-up
    that fails is a boot error and stops the server. The batcher starts here, not in post_fork,
    so that Gunicorn's signal handlers exist and this hook's have replaced them before any
    model thread runs: a stop signal (Ctrl-C, SIGTERM) during warm-up then ends the worker at
    once. Nothing has been admitted yet, and a normal interpreter exit would end the model
    thread inside a forward pass (C++ aborts: "terminate called without an active exception").
    """
    registry = _registry(worker)
    metrics.start_worker()
    with runtime.stop_signals() as stopped:
        registry.start(worker.wanwu_slot)
        while not stopped and not registry.wait_ready(0.1):
            worker.notify()
        if not stopped:  # serve what the last model change chose, then follow the next ones
            worker.wanwu_follower = Follower(
                _control(worker), registry, worker.cfg.graceful_timeout
            )
            pool = ThreadPoolExecutor(1)  # it may load models: beat the heart meanwhile
            caught_up = pool.submit(worker.wanwu_follower.catch_up)
            pool.shutdown(wait=False)
            while not stopped and not futures.wait([caught_up], 0.1).done:
                worker.notify()
        if stopped:
            # Still under this block's handlers: the master's SIGQUIT, which follows a Ctrl-C,
            # would otherwise raise SystemExit here and run worker_exit, which waits for the
            # warm-up to finish.
            worker.log.info("worker %s: stopped during warm-up", worker.pid)
            logging.shutdown()
            os._exit(0)
    caught_up.result()
    worker.wanwu_follower.start()
    if settings.grpc_bind:  # grpcio is imported after fork, never before
        from app.adapters import grpc

        worker.wanwu_grpc = grpc.serve(worker.app.wsgi().extensions["wanwu.core"])


def worker_exit(server, worker) -> None:
    """Answer everything the batcher admitted before the worker exits."""
    if getattr(worker, "wanwu_follower", None):  # apply no model change from now on
        worker.wanwu_follower.stop()
    if getattr(worker, "wanwu_grpc", None):  # finish its RPCs while the batcher still runs
        worker.wanwu_grpc.stop(server.cfg.graceful_timeout).wait()
    _registry(server).stop(timeout=server.cfg.graceful_timeout)
    runtime.exit_if_stopping_cleanly()


def on_exit(server) -> None:
    """Remove the metrics and control folders this master created."""
    boot.remove_metrics_dir()
    if _control(server):
        _control(server).remove()
    runtime.exit_if_stopping_cleanly()


def child_exit(server, worker) -> None:
    """Drop the dead worker's live gauges, its connection count and its model-change place."""
    metrics.mark_worker_dead(worker.pid)
    _control(server).leave(worker.pid)
    balance.board.forget(worker.wanwu_slot)
