"""`--load URL [--share PERCENT]`: the new version served by a running service.

The artifact must sit in that service's model repository as `NAME/VERSION/NAME.pt`; the
management API (app.repository.operations) then loads it on every worker and switches to it
(`set-default`), or, with a share, sends that percent of the requests naming no version to it
(a gray release), the version serving now keeping the rest. The admin key comes from
`WANWU_ADMIN_KEY`, never from the command line (where `ps` shows it).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from app.repository.scan import version_name

TIMEOUT_S = 600  # a load waits for every worker to warm the version up (WANWU_LOAD_TIMEOUT_S)


class RolloutError(RuntimeError):
    """The service did not take the version; the message says why."""


def where(artifact: Path) -> tuple[str, str]:
    """The model name and version an artifact at `NAME/VERSION/file` is served as."""
    version = version_name(artifact.parent.name)
    if version is None:
        raise RolloutError(
            f"--load serves {artifact} from the service's model repository: write it as "
            "REPOSITORY/NAME/VERSION/NAME.pt (--out)"
        )
    return artifact.parent.parent.name, version


def call(url: str, artifact: Path, share: int | None = None) -> dict[str, Any]:
    """Load `artifact`'s version through the management API at `url`; its answer."""
    key = os.environ.get("WANWU_ADMIN_KEY")
    if not key:
        raise RolloutError("--load needs the admin key in WANWU_ADMIN_KEY")
    name, version = where(artifact)
    path = f"/models/{urllib.parse.quote(name)}/{version}/"
    path += f"share?percent={share}" if share else "set-default"
    request = urllib.request.Request(
        url.rstrip("/") + path, method="PUT", headers={"Authorization": f"Bearer {key}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        raise RolloutError(f"{url} refused {name} version {version}: {_message(exc)}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise RolloutError(f"cannot reach the management API at {url}: {exc}") from None


def _message(exc: urllib.error.HTTPError) -> str:
    """The management API's error message, else the status line."""
    try:
        body = json.load(exc)
    except ValueError:
        return f"{exc.code} {exc.reason}"
    error = body.get("error", body)
    return f"{exc.code} {error.get('message', error) if isinstance(error, dict) else error}"
