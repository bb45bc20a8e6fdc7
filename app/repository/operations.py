"""What the management API does, whichever protocol asks: the changes to the served models.

Policy (app.adapters.management speaks TorchServe's and OIP's HTTP for it):
- Every change needs a model repository (WANWU_MODEL_REPOSITORY) and goes through
  app.repository.control: loaded and warmed on every worker while the served versions keep
  answering, then switched everywhere at once; a version that fails to load changes nothing.
- `load(name)` serves the model's pinned (WANWU_PINNED_VERSIONS) or highest version as its
  default, and ends a gray release; `load(name, v)` serves version v. A model not served yet
  is added.
- `set_default(name, v)` is `load(name, v)`: version v answers every request naming no version.
- `share(name, v, percent)` keeps the default and sends `percent` % (1-99) of the requests
  naming no version to v, loading it if needed; 0 ends the gray release.
- `unload(name)` stops serving a model: its requests get 404. The last model stays.
  `unload(name, v)` ends v's gray release; a default version is replaced, not unloaded.
- `register(url)` (TorchServe's `POST /models?url=`): `url` names a model folder, or a `.mar`
  archive inside the repository, imported as the model's next version and then loaded.
- With WANWU_MODEL_SNAPSHOT, every change that switched is written there
  (app.repository.snapshot) before the next change starts, so that a restart serves it again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from app import errors
from app.artifact import ArtifactError, manifest_path, sha256_file
from app.repository import snapshot
from app.repository.control import Report, change
from app.repository.folder import ControlFolder
from app.repository.plans import Plan, not_served
from app.repository.registry import Registry
from app.repository.scan import NAME, NAME_RULE, artifact, model_folders, version_name, versions
from app.settings import Settings

log = logging.getLogger(__name__)


class Management:
    """The management calls of one server (any worker may take one)."""

    def __init__(self, registry: Registry, folder: ControlFolder, settings: Settings) -> None:
        self.registry, self.folder, self.settings = registry, folder, settings

    @property
    def root(self) -> Path:
        """The model repository, or a 400 saying changes need one."""
        if self.registry.root is None:
            raise errors.BadRequest(
                "Models are changed in a model repository: start with WANWU_MODEL_REPOSITORY "
                "(WANWU_MODEL serves one fixed model)."
            )
        return self.registry.root

    def index(self) -> list[dict[str, Any]]:
        """Every version in the repository (OIP's repository index): READY when it serves."""
        plans = self.registry.plans
        if self.registry.root is None:
            return [
                {"name": name, "version": v, "state": "READY", "reason": ""}
                for name, plan in plans.items()
                for v in plan.versions
            ]
        entries = []
        for folder in model_folders(self.root):
            served = plans.get(folder.name)
            for version in versions(folder):
                live = served is not None and version in served.versions
                entries.append(
                    {
                        "name": folder.name,
                        "version": version,
                        "state": "READY" if live else "UNAVAILABLE",
                        "reason": "" if live else "unloaded",
                    }
                )
        return entries

    def load(self, name: str, version: str | None = None) -> Report:
        """Serve `version` (the pinned or highest one when None) of `name` as its default."""
        version = version or self._newest(name)

        def edit(plans: dict[str, Plan]) -> dict[str, Plan]:
            plans[name] = Plan(self._existing(name, version))
            return plans

        return self._change(edit)

    set_default = load

    def share(self, name: str, version: str, percent: int) -> Report:
        """Send `percent` % of `name`'s requests naming no version to `version`."""
        version = version_name(version) or version  # "01" is version 1
        if not 0 <= percent < 100:
            raise errors.BadRequest(
                f"percent must be 0 (end the gray release) to 99, got {percent}; to send every "
                f"request to version {version}, make it the default (set-default)."
            )

        def edit(plans: dict[str, Plan]) -> dict[str, Plan]:
            plan = self._served(plans, name)
            if version == plan.default:
                raise errors.BadRequest(f"Version {version} is {name}'s default already.")
            if percent == 0:
                plans[name] = Plan(plan.default)
            else:
                plans[name] = Plan(plan.default, self._existing(name, version), percent)
            return plans

        return self._change(edit)

    def unload(self, name: str, version: str | None = None) -> Report:
        """Stop serving `name`, or only its gray release's `version`."""
        version = version and (version_name(version) or version)

        def edit(plans: dict[str, Plan]) -> dict[str, Plan]:
            plan = self._served(plans, name)
            if version is None:
                if len(plans) == 1:
                    raise errors.BadRequest(
                        f"{name} is the last model served; load another before unloading it."
                    )
                del plans[name]
            elif version == plan.canary:
                plans[name] = Plan(plan.default)
            elif version == plan.default:
                raise errors.BadRequest(
                    f"Version {version} is {name}'s default: set another default "
                    f"(PUT /models/{name}/VERSION/set-default) or unload the model."
                )
            else:
                raise errors.ModelNotFound(
                    f"Model version: {version} is not served for model: {name}. Served "
                    f"versions: {', '.join(plan.versions)}."
                )
            return plans

        return self._change(edit)

    def register(self, url: str, name: str | None = None) -> tuple[str, Report]:
        """Load the model folder `url` names, or import the `.mar` it names; return the name."""
        if url.endswith(".mar"):
            name, version, new = self._import_mar(url, name)
            try:
                return name, self.load(name, version)
            except errors.ApiError:  # not served: not left to serve at the next start either
                if new:
                    self._remove_import(name, version)
                raise
        if name not in (None, url):
            raise errors.BadRequest(f"model_name ({name}) must be the folder's name ({url}).")
        return url, self.load(url)

    # -- helpers ------------------------------------------------------------------------------

    def _change(self, edit: Any) -> Report:
        self.root  # noqa: B018  (a 400 without a repository, before taking the lock)
        return change(self.folder, self.settings.load_timeout_s, edit, self._keep)

    def _keep(self, plans: dict[str, Plan]) -> None:
        """Write the switched plans to WANWU_MODEL_SNAPSHOT, when set (app.repository.snapshot)."""
        path = self.settings.model_snapshot
        if not path:
            return
        unloaded = [p.name for p in model_folders(self.root) if p.name not in plans]
        try:
            snapshot.write(path, {n: asdict(plan) for n, plan in plans.items()}, unloaded)
        except OSError:
            log.exception("the change was made but not kept in WANWU_MODEL_SNAPSHOT %s", path)

    def _folder(self, name: str) -> Path:
        folder = self.root / name
        if not NAME.fullmatch(name) or not folder.is_dir():
            raise errors.ModelNotFound(
                f"Model not found: {name}: the repository has no folder {folder}."
            )
        return folder

    def _newest(self, name: str) -> str:
        numbered = versions(self._folder(name))
        if not numbered:
            raise errors.ModelNotFound(f"{self._folder(name)} has no numbered version folder.")
        return self.settings.pins.get(name, list(numbered)[-1])

    def _existing(self, name: str, version: str) -> str:
        """`version` normalised ("07" is 7), once its folder holds one artifact; else 404/400."""
        numbered = versions(self._folder(name))
        version = version_name(version) or version
        if version not in numbered:
            raise errors.ModelNotFound(
                f"Model version: {version} does not exist for model: {name}. Versions in "
                f"the repository: {', '.join(numbered) or 'none'}."
            )
        try:
            artifact(numbered[version])
        except ArtifactError as exc:
            raise errors.LoadFailed(str(exc)) from None
        return version

    def _served(self, plans: dict[str, Plan], name: str) -> Plan:
        if name not in plans:
            raise not_served(name, plans)
        return plans[name]

    def _remove_import(self, name: str, version: str) -> None:
        """Remove the version `_import_mar` added, and its model folder if nothing else is in it."""
        folder = self.root / name
        shutil.rmtree(folder / version, ignore_errors=True)
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty: the model came with this import
        log.info("removed %s version %s, imported but not loaded", name, version)

    def _import_mar(self, url: str, name: str | None) -> tuple[str, str, bool]:
        """Export the archive at `url` (inside the repository) as its model's next version;
        return the name, the version, and whether it is new: an archive a version was already
        imported from (the same SHA-256) is that version again."""
        from app.export.library import export
        from app.export.mar import MarError, read_mar
        from app.export.request import ExportError, ExportRequest

        root = self.root.resolve()
        try:  # a client's path: a NUL byte or an over-long name must not escape as a 500
            archive = (root / url).resolve()
            found = archive.is_relative_to(root) and archive.is_file()
        except (OSError, ValueError):
            found = False
        if not found:
            raise errors.BadRequest(
                f"url={url} must name a .mar file inside the model repository {root} "
                "(URLs and paths outside it are not fetched)."
            )
        try:  # TorchServe serves an archive under the model name its manifest gives
            name = name or read_mar(archive).name
        except MarError as exc:
            raise errors.LoadFailed(f"{url} could not be imported: {exc}") from None
        if not NAME.fullmatch(name):
            raise errors.BadRequest(f"model_name {name[:200]!r} must be {NAME_RULE}.")
        folder = root / name
        numbered = versions(folder) if folder.is_dir() else {}
        digest = sha256_file(archive)
        for number, path in numbered.items():
            if _imported_from(path) == digest:
                log.info("%s is %s version %s already: not imported again", url, name, number)
                return name, number, False
        version = str(int(list(numbered)[-1]) + 1) if numbered else "1"  # folder names
        # Exported into a hidden folder, which a scan skips, then renamed into place whole: a
        # failed import leaves nothing, and a restart meanwhile never sees half a version.
        staging = root / f".import-{uuid.uuid4().hex}"
        try:
            staging.mkdir()
            export(ExportRequest(from_mar=archive, name=name, out=staging / f"{name}.pt"))
            folder.mkdir(exist_ok=True)
            staging.rename(folder / version)
        except (ExportError, ArtifactError) as exc:
            raise errors.LoadFailed(f"{url} could not be imported: {exc}") from None
        except OSError as exc:  # e.g. the version folder appeared meanwhile (another import)
            raise errors.LoadFailed(
                f"{url} could not be imported as {folder / version}: {exc}"
            ) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # gone once renamed
        log.info("imported %s as %s version %s", url, name, version)
        return name, version, True


def _imported_from(version_dir: Path) -> str | None:
    """The SHA-256 of the archive a version was imported from, per its manifest; else None."""
    try:
        manifest = json.loads(manifest_path(artifact(version_dir)).read_text())
    except (ArtifactError, OSError, ValueError):
        return None
    weights = manifest.get("weights") if isinstance(manifest, dict) else None
    if isinstance(weights, dict) and weights.get("kind") == "torchserve-archive":
        return weights.get("sha256")
    return None
