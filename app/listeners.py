"""Which listener a request came in on: the inference port, or the management API's.

Policy: the management API (WANWU_MANAGEMENT_BIND, open when WANWU_ADMIN_KEYS is set) is a
second Gunicorn listener, read by the same intake. Each request's WSGI environ says which
listener took its connection (`LISTENER`), so that the app answers management calls there
only, and nothing else there: a client's Host header, which names the port in SERVER_PORT,
cannot move a call from one to the other.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.settings import Settings

LISTENER = "wanwu.listener"  # the environ key: "inference" or "management"


def management_bind(settings: Settings) -> str | None:
    """The management API's address, when it listens (WANWU_ADMIN_KEYS is set)."""
    return settings.management_bind if settings.admin_keys else None


def management_listeners(listeners: Sequence[object], settings: Settings) -> set[object]:
    """The management API's Gunicorn listener among the worker's `listeners`, none when it
    does not listen.

    gunicorn.conf.py binds [WANWU_BIND, WANWU_MANAGEMENT_BIND], and Gunicorn keeps that order:
    it opens them in it, a reload (HUP) keeps them, and a re-exec (USR2) hands the open sockets
    to the new master in it. The position is what survives every one of these; the address
    does not (a re-exec names each socket by getsockname(), not by its bind, and an `fd://N`
    is closed once Gunicorn holds the socket). Any other count of listeners (a socket
    activation passing its own) gets no management listener: management calls are refused.
    """
    if management_bind(settings) is None or len(listeners) != 2:
        return set()
    return {listeners[1]}
