"""The serving models whose collections the stream worker keeps current."""

from __future__ import annotations

from encoders.runtime import ServingModel


class WriteTargets:
    """Versions every catalog and behavior event is written into: the active one, the rollback target
    (so a rollback is instant and fresh) and, during a swap, the version being backfilled (dual-write).

    Agents read :meth:`models` once per batch; the swap coordinator adds and removes versions."""

    def __init__(self) -> None:
        self._models: dict[str, ServingModel] = {}

    def models(self) -> tuple[ServingModel, ...]:
        """The current targets, oldest version first."""
        return tuple(sorted(self._models.values(), key=lambda m: m.number))

    def versions(self) -> list[str]:
        """Names of the current targets, oldest first."""
        return [m.version for m in self.models()]

    def get(self, version: str) -> ServingModel | None:
        """The target serving ``version``, if it is one."""
        return self._models.get(version)

    def add(self, model: ServingModel) -> None:
        """Start writing into ``model``'s collections."""
        self._models[model.version] = model

    def keep_only(self, versions: set[str]) -> None:
        """Stop writing into every version not in ``versions``."""
        self._models = {v: m for v, m in self._models.items() if v in versions}
