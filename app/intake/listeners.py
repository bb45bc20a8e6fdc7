"""Which listener a request came in on: the inference port, or the management API's.

Policy: the management API (WANWU_MANAGEMENT_BIND, open when WANWU_ADMIN_KEYS is set) is a
second Gunicorn listener, read by the same intake. Each request's WSGI environ says which
listener took its connection (`LISTENER`), so that the app answers management calls there
only, and nothing else there: a client's Host header, which names the port in SERVER_PORT,
cannot move a call from one to the other.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable

from gunicorn.util import parse_address

from app.settings import Settings

LISTENER = "wanwu.listener"  # the environ key: "inference" or "management"


def management_bind(settings: Settings) -> str | None:
    """The management API's address, when it listens (WANWU_ADMIN_KEYS is set)."""
    return settings.management_bind if settings.admin_keys else None


def management_address(settings: Settings) -> object | None:
    """The address Gunicorn names the management listener by (`cfg_addr`), or None when it
    does not listen. Read in the master before Gunicorn opens its listeners: an `fd://N` is
    asked for its address while N is still open."""
    bind = management_bind(settings)
    if bind is None:
        return None
    address = parse_address(bind)
    if isinstance(address, int):
        with socket.socket(fileno=socket.dup(address)) as sock:
            return sock.getsockname()
    return address


def management_listeners(listeners: Iterable[object], address: object | None) -> set[object]:
    """The Gunicorn listeners (gunicorn.sock.BaseSocket) bound to `management_address`."""
    return {
        listener for listener in listeners if address is not None and listener.cfg_addr == address
    }
