"""What each model serves: its plan, a default version and a gray release's share.

Policy:
- A `Plan` is a model's default version and, during a gray release, a newer version that gets
  `percent` of the requests naming no version (app.repository.registry spreads them evenly:
  every 100/percent-th one, counted per worker). A request naming a version gets that version
  while it is loaded.
- Plans travel as JSON (their fields, `dataclasses.asdict`): between workers
  (app.repository.control) and across restarts (app.repository.snapshot).
- A model no plan serves is a 404 naming the served ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from app import errors


@dataclass(frozen=True)
class Plan:
    """What one model serves: its default version, and a gray release's version and share."""

    default: str
    canary: str | None = None
    percent: int = 0  # of the requests that name no version, to `canary`

    @property
    def versions(self) -> tuple[str, ...]:
        return (self.default,) if self.canary is None else (self.default, self.canary)

    def share(self, version: str) -> float:
        """The part (0-1) of the requests naming no version that `version` gets."""
        if version == self.canary:
            return self.percent / 100
        return 1 - self.percent / 100 if version == self.default else 0.0


Plans = Mapping[str, Plan]


def not_served(name: str, plans: Plans) -> errors.ApiError:
    """The 404 for a model `plans` do not serve, naming the ones they do."""
    return errors.ModelNotFound(
        f"Model not found: {name}. Served models: {', '.join(sorted(plans))}."
    )


def plans_from_json(data: Mapping[str, Mapping[str, object]]) -> dict[str, Plan]:
    return {name: Plan(**fields) for name, fields in data.items()}  # type: ignore[arg-type]
