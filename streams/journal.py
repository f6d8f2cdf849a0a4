"""The swap journal: which versions' collections are complete and kept current, and how far a running
backfill has got, persisted after every step so a crashed backfill resumes where it stopped."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from cartwise.registry import atomic_write


class Backfill(BaseModel):
    """A version being built: ``phase`` products (catalog re-embedded from ``offsets``, the next catalog
    offset per partition) then users (rebuilt from the user-history Table)."""

    version: str
    phase: Literal["products", "users"] = "products"
    offsets: dict[int, int] = Field(default_factory=dict)
    products: int = Field(0, description="catalog events applied so far")
    reason: str = ""
    started_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))


class SwapJournal(BaseModel):
    """``live``: versions whose products and users collections are complete and written by every event;
    ``backfill``: the version being built, if any."""

    live: list[str] = Field(default_factory=list)
    backfill: Backfill | None = None

    @classmethod
    def load(cls, path: Path) -> "SwapJournal":
        """The journal at ``path`` (empty when the file does not exist)."""
        return cls.model_validate_json(path.read_text()) if path.exists() else cls()

    def save(self, path: Path) -> None:
        """Write atomically: a crash leaves the previous or the new journal, never half of one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, self.model_dump_json(indent=1))
