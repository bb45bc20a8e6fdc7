"""What gunicorn.conf.py runs first, before anything imports prometheus_client or torch.

prometheus_client reads PROMETHEUS_MULTIPROC_DIR once, when it is first imported, so the
folder is chosen here, with nothing but the standard library and app.settings loaded; the
hooks (app.server) import the metrics after. Until Gunicorn's arbiter installs its signal
handlers, a stop signal ends the master here, quietly.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import sys
import tempfile

from app.settings import Settings, SettingsError, refuse_unknown_variables


def start_master() -> Settings:
    """Take the stop signals, read the settings (or exit naming the bad one) and give this
    master its metrics folder."""
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
    _metrics_dir()
    return settings


def _stop_early(sig, frame):
    """Ctrl-C or SIGTERM before Gunicorn's arbiter takes the signals over (while the model
    loads): leave at once, quietly, with the shell's status for that signal."""
    remove_metrics_dir()
    sys.exit(128 + sig)


def remove_metrics_dir() -> None:
    """Remove the metrics folder this master made (never from a worker, which shares it)."""
    owner = os.environ.get("WANWU_METRICS_DIR_OWNER") == str(os.getpid())
    if owner and os.environ.get("WANWU_METRICS_DIR_CREATED") == "1":
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def _metrics_dir() -> None:
    """Give this master a fresh prometheus multiprocess directory (before app.metrics loads)."""
    owner = str(os.getpid())
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if os.environ.get("WANWU_METRICS_DIR_OWNER") == owner and path:
        return  # a config reload (HUP) keeps the live workers' files
    if path:
        try:
            _empty(path)
        except OSError as exc:  # most often a read-only root without a tmpfs there
            sys.exit(
                f"wanwu: PROMETHEUS_MULTIPROC_DIR={path}: {exc.strerror}; it must be a "
                "writable folder (a read-only container needs --tmpfs /tmp, README: Docker)"
            )
    else:
        path = tempfile.mkdtemp(prefix=f"wanwu-metrics-{owner}-", dir=tmpfs())
        os.environ["WANWU_METRICS_DIR_CREATED"] = "1"
        # Also when start-up is refused (a model or setting Gunicorn's loader stops on), which
        # exits without on_exit: a supervisor restarting it would fill /dev/shm.
        atexit.register(remove_metrics_dir)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    os.environ["WANWU_METRICS_DIR_OWNER"] = owner


def _empty(path: str) -> None:
    """Empty the folder, keeping the folder itself: it may be a mount point (a tmpfs, an
    emptyDir), which cannot be removed."""
    os.makedirs(path, exist_ok=True)
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def tmpfs() -> str | None:
    """/dev/shm where the machine has it: Gunicorn's heartbeat files and the metrics go there."""
    return "/dev/shm" if os.path.isdir("/dev/shm") else None
