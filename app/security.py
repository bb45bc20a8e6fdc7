"""Security headers on every response the app writes.

Every answer says `nosniff` (a JSON body or an upload echoed back is never run as a script)
and sends no Referer onwards. The Content-Security-Policy lets the upload page load only its
own scripts and styles, show previews from `blob:`/`data:` URLs, call only this origin, and
never be framed; on JSON it forbids everything, which changes nothing for API clients.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: the intake sends these headers without importing Flask
    from flask import Flask, Response

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
}


def _add_headers(response: Response) -> Response:
    response.headers.update(HEADERS)
    return response


def init_app(app: Flask) -> None:
    """Add the headers to every response, error answers and static files included."""
    app.after_request(_add_headers)
