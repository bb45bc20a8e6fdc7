"""Gunicorn configuration: declarations, and hooks that are one line calling app.server.

The settings come from app.settings (WANWU_* variables); app.boot reads them and chooses the
metrics folder first, before anything imports prometheus_client.
"""

from app import boot

settings = boot.start_master()

# After the metrics folder is chosen: app.server imports prometheus_client, which reads it once.
from app import server  # noqa: E402

server.prepare_master(settings)

wsgi_app = "app.web:create_app()"
preload_app = True
bind = server.binds(settings)
workers = settings.worker_processes
# gthread that reads whole requests before a thread sees them, spreading connections evenly
worker_class = "app.balance.BalancedThreadWorker"
threads = settings.request_threads
timeout = 60
graceful_timeout = 30
keepalive = 5
worker_tmp_dir = boot.tmpfs()
loglevel = settings.log_level
accesslog = None  # the app writes one JSON line per request instead
errorlog = "-"
# Gunicorn's control socket runs a thread in the master (later forks would copy it) and
# defaults to one path per user, shared by every master on the machine. Not needed here.
control_socket_disable = True


def on_starting(arbiter):
    server.on_starting(arbiter, settings)


def when_ready(arbiter):
    server.when_ready(arbiter, settings)


def pre_fork(arbiter, worker):
    server.pre_fork(arbiter, worker, settings)


def post_fork(arbiter, worker):
    server.post_fork(arbiter, worker, settings)


def post_worker_init(worker):
    server.post_worker_init(worker, settings)


def worker_exit(arbiter, worker):
    server.worker_exit(arbiter, worker)


def on_exit(arbiter):
    server.on_exit(arbiter)


def child_exit(arbiter, worker):
    server.child_exit(arbiter, worker)
