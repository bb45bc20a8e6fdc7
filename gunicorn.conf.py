"""Gunicorn configuration: settings come from app.settings, hooks call into app.runtime.

The model is loaded once in the master (preload) and shared copy-on-write by forked
workers. The master runs no forward pass, starts no thread pool and touches no CUDA API;
each worker pins its CPUs and threads, picks its device and warms up after the fork.
"""

import gc
import os
import shutil
import tempfile

from app.settings import Settings

settings = Settings.from_env()  # a bad value stops start-up here, with its name


def _metrics_dir() -> str:
    """Give this master a fresh prometheus multiprocess directory (before app.metrics loads)."""
    owner = str(os.getpid())
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if os.environ.get("WANWU_METRICS_DIR_OWNER") == owner and path:
        return path  # a config reload (HUP) keeps the live workers' files
    if path:
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
    else:
        path = tempfile.mkdtemp(prefix="wanwu-metrics-", dir=_tmpfs())
        os.environ["WANWU_METRICS_DIR_CREATED"] = "1"
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    os.environ["WANWU_METRICS_DIR_OWNER"] = owner
    return path


def _tmpfs() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") else None


_metrics_dir()

# After the metrics directory is chosen:
from app import balance, metrics, ratelimit, runtime, tokens  # noqa: E402

runtime.configure_logging(settings.log_level)
runtime.prepare_master()
# Room for the slots of a reload's new workers while the old ones finish.
balance.install(2 * settings.worker_processes)
# One table every worker shares, made before the fork: the rate limit is exact across workers.
ratelimit.install(settings.rate_limit)
tokens.verifier(settings)  # an unreadable token key file stops start-up here, with its name
metrics.WORKERS_CONFIGURED.set(settings.worker_processes)

wsgi_app = "app:create_app()"
preload_app = True
bind = [settings.bind]
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


def on_starting(server):
    """Log the effective settings once."""
    server.log.info("wanwu settings: %s", settings.public())


def pre_fork(server, worker):
    """Give the new worker a free CPU slot and the settings; freeze the heap so fork shares
    it copy-on-write."""
    taken = {getattr(w, "wanwu_slot", -1) for w in server.WORKERS.values()}
    worker.wanwu_slot = runtime.free_slot(taken)
    worker.wanwu_settings = settings
    gc.freeze()


def post_fork(server, worker):
    """Pin threads and CPUs, pick the device, start the batcher (threads do not survive fork)."""
    pinned = runtime.configure_worker(settings, worker.wanwu_slot)
    server.log.info("worker %s: %s", worker.pid, pinned)
    _registry(server).start(worker.wanwu_slot)


def post_worker_init(worker):
    """Accept no connection before the model is warm: a fresh worker (a replacement, a reload)
    would otherwise answer 503 to clients its siblings could serve. Heartbeats meanwhile keep
    the arbiter from timing it out; a warm-up that fails is a boot error and stops the server."""
    registry = _registry(worker)
    while worker.alive and not registry.wait_ready(1.0):
        worker.notify()


def worker_exit(server, worker):
    """Answer everything the batcher admitted before the worker exits."""
    _registry(server).stop(timeout=graceful_timeout)


def on_exit(server):
    """Remove the metrics directory this master created."""
    if os.environ.get("WANWU_METRICS_DIR_CREATED") == "1":
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def child_exit(server, worker):
    """Drop the dead worker's live gauges and its connection count."""
    metrics.mark_worker_dead(worker.pid)
    balance.board.forget(worker.wanwu_slot)
