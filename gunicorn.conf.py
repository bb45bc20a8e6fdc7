"""Gunicorn configuration: settings come from app.settings, hooks call into app.runtime.

The model is loaded once in the master (preload) and shared copy-on-write by forked
workers. The master runs no forward pass, starts no thread pool and touches no CUDA API;
each worker pins its CPUs and threads, picks its device and warms up after the fork.
"""

import atexit
import gc
import logging
import os
import shutil
import signal
import sys
import tempfile
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor

from app.settings import Settings, SettingsError, refuse_unknown_variables, short_keys


def _stop_early(sig, frame):
    """Ctrl-C or SIGTERM before Gunicorn's arbiter takes the signals over (while the model
    loads): leave at once, quietly, with the shell's status for that signal."""
    _remove_metrics_dir()
    sys.exit(128 + sig)


def _remove_metrics_dir() -> None:
    """Remove the metrics folder this master made (never from a worker, which shares it)."""
    owner = os.environ.get("WANWU_METRICS_DIR_OWNER") == str(os.getpid())
    if owner and os.environ.get("WANWU_METRICS_DIR_CREATED") == "1":
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


# Until the arbiter installs its handlers; a reload (HUP) finds them in place and keeps them.
if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, _stop_early)
    signal.signal(signal.SIGTERM, _stop_early)

try:
    settings = Settings.from_env()
    refuse_unknown_variables()
except SettingsError as exc:
    # One line naming the variable, its value and what it may be. SystemExit, unlike an
    # exception, passes Gunicorn's config loader without a "Failed to read config" traceback.
    sys.exit(f"wanwu: {exc}")


def _metrics_dir() -> str:
    """Give this master a fresh prometheus multiprocess directory (before app.metrics loads)."""
    owner = str(os.getpid())
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if os.environ.get("WANWU_METRICS_DIR_OWNER") == owner and path:
        return path  # a config reload (HUP) keeps the live workers' files
    if path:
        try:
            _empty(path)
        except OSError as exc:  # most often a read-only root without a tmpfs there
            sys.exit(
                f"wanwu: PROMETHEUS_MULTIPROC_DIR={path}: {exc.strerror}; it must be a "
                "writable folder (a read-only container needs --tmpfs /tmp, README: Docker)"
            )
    else:
        path = tempfile.mkdtemp(prefix=f"wanwu-metrics-{owner}-", dir=_tmpfs())
        os.environ["WANWU_METRICS_DIR_CREATED"] = "1"
        # Also when start-up is refused (a model or setting Gunicorn's loader stops on), which
        # exits without on_exit: a supervisor restarting it would fill /dev/shm.
        atexit.register(_remove_metrics_dir)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    os.environ["WANWU_METRICS_DIR_OWNER"] = owner
    return path


def _empty(path: str) -> None:
    """Empty the folder, keeping the folder itself: it may be a mount point (a tmpfs, an
    emptyDir), which cannot be removed."""
    os.makedirs(path, exist_ok=True)
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def _tmpfs() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") else None


_metrics_dir()

# After the metrics directory is chosen:
from app import balance, metrics, ratelimit, runtime, tokens  # noqa: E402
from app.intake.listeners import management_bind  # noqa: E402
from app.repository.control import ControlFolder, Follower  # noqa: E402
from app.repository.operations import Management  # noqa: E402

runtime.configure_logging(settings.log_level)
log = logging.getLogger("wanwu")
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

wsgi_app = "app:create_app()"
preload_app = True
# The management API is a second listener of the same workers: the second, by position
# (app.intake.listeners).
bind = [settings.bind] + ([management_bind(settings)] if management_bind(settings) else [])
workers = settings.worker_processes
# gthread that reads whole requests before a thread sees them, spreading connections evenly
worker_class = "app.balance.BalancedThreadWorker"
threads = settings.request_threads
timeout = 60
graceful_timeout = 30
keepalive = 5
worker_tmp_dir = _tmpfs()
loglevel = settings.log_level
accesslog = None  # the app writes one JSON line per request instead
errorlog = "-"
# Gunicorn's control socket runs a thread in the master (later forks would copy it) and
# defaults to one path per user, shared by every master on the machine. Not needed here.
control_socket_disable = True


def _registry(server_or_worker):
    """The preloaded app's models (master and workers hold the same application object)."""
    return server_or_worker.app.wsgi().extensions["wanwu.registry"]


def _control(server_or_worker):
    """The control folder (app.repository.control), once when_ready has made it."""
    management = server_or_worker.app.wsgi().extensions.get("wanwu.management")
    return management.folder if management else None


def on_starting(server):
    """Log the effective settings once."""
    server.log.info("wanwu settings: %s", settings.public())


def when_ready(server):
    """Publish the preloaded models' plans, and give the app the management calls (before
    the fork: every worker inherits both)."""
    registry = _registry(server)
    # Where the workers follow model changes (app.repository.control), once the models loaded.
    control = ControlFolder.create(registry.plans)
    app = server.app.wsgi()
    app.extensions["wanwu.management"] = Management(registry, control, settings)
    if management_bind(settings):
        server.log.info("management API on %s", management_bind(settings))


def pre_fork(server, worker):
    """Give the new worker a free CPU slot and the settings; freeze the heap so fork shares
    it copy-on-write."""
    taken = {getattr(w, "wanwu_slot", -1) for w in server.WORKERS.values()}
    worker.wanwu_slot = runtime.free_slot(taken)
    worker.wanwu_settings = settings
    gc.freeze()


def post_fork(server, worker):
    """Pin threads and CPUs (they do not survive fork)."""
    pinned = runtime.configure_worker(settings, worker.wanwu_slot)
    server.log.info("worker %s: %s", worker.pid, pinned)


def post_worker_init(worker):
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
            worker.wanwu_follower = Follower(_control(worker), registry, graceful_timeout)
            pool = ThreadPoolExecutor(1)  # it may load models: beat the heart meanwhile
            caught_up = pool.submit(worker.wanwu_follower.catch_up)
            pool.shutdown(wait=False)
            while not stopped and not futures.wait([caught_up], 0.1).done:
                worker.notify()
    if stopped:
        worker.log.info("worker %s: stopped during warm-up", worker.pid)
        logging.shutdown()
        os._exit(0)
    caught_up.result()
    worker.wanwu_follower.start()
    if settings.grpc_bind:  # grpcio is imported after fork, never before
        from app.adapters import grpc

        worker.wanwu_grpc = grpc.serve(worker.app.wsgi().extensions["wanwu.core"])


def worker_exit(server, worker):
    """Answer everything the batcher admitted before the worker exits."""
    if getattr(worker, "wanwu_follower", None):  # apply no model change from now on
        worker.wanwu_follower.stop()
    if getattr(worker, "wanwu_grpc", None):  # finish its RPCs while the batcher still runs
        worker.wanwu_grpc.stop(graceful_timeout).wait()
    _registry(server).stop(timeout=graceful_timeout)
    runtime.exit_if_stopping_cleanly()


def on_exit(server):
    """Remove the metrics and control folders this master created."""
    _remove_metrics_dir()
    if _control(server):
        _control(server).remove()
    runtime.exit_if_stopping_cleanly()


def child_exit(server, worker):
    """Drop the dead worker's live gauges, its connection count and its model-change place."""
    metrics.mark_worker_dead(worker.pid)
    _control(server).leave(worker.pid)
    balance.board.forget(worker.wanwu_slot)
