"""The model-version lifecycle: which version is active, candidate or retired, the index collections a
version pairs with, the ``models.updates`` messages that request a swap or a repair and announce an
activation, the first active version, and the API processes' following of activations.

States. A version ``vN`` published to the registry is a *candidate*; activating it makes it *active* and
the one it replaces *retired* (kept for instant rollback until :meth:`VersionLifecycle.collect_garbage`).

One record says what is active: the registry's ``ACTIVE`` file, replaced atomically by
:meth:`VersionLifecycle.activate` (the stream worker's swap coordinator, and the first start). Every other
notion of "active" is derived from it:

- the swap journal's ``live`` (streams/journal.py) lists the versions whose collections are complete and
  written by every event, newest first; it is not read as "what is active": the coordinator writes it just
  before activating and, at every start, rebuilds it with the registry's active version first;
- an API process's :class:`~encoders.runtime.ActiveModel` is a cache of the registry's active version,
  loaded at start and refreshed by :class:`ModelFollower` on each ``activated`` message (and once at its
  start, so an activation in between is not missed).

Messages on ``models.updates`` (JSON values, key = the version, one partition so every reader sees one
order):

- ``swap_requested`` (trainer after its quality gate passed, ``cartwise models activate|rollback``):
  the coordinator backfills the version's collections unless they are live already, then activates it.
- ``activated`` (coordinator, after the registry's ACTIVE names the version): every API process reloads
  the registry's active version and switches encoder and collections as one pair.
- ``repair_requested`` (``cartwise repair``): the coordinator rebuilds the active version's collections
  in place from the catalog topic and the user-history changelog.
- ``held`` (trainer, gate failed) and ``swap_abandoned`` (coordinator): informational; nothing changes."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Literal, NamedTuple, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import BaseModel, Field, ValidationError

from cartwise.index import AsyncVectorIndex
from cartwise.kafka_io import make_producer, tail_consumer
from cartwise.settings import Settings

log = logging.getLogger(__name__)

VERSION_RE = re.compile(r"^v(\d+)$")
_COLLECTION_RE = re.compile(r"^(products|users|groups)_v\d+$")
ACTIVE_FILE = "ACTIVE"
LIFECYCLE_FILE = "lifecycle.json"
CANDIDATE, ACTIVE, RETIRED = "candidate", "active", "retired"
SWAP_REQUESTED, ACTIVATED, HELD, SWAP_ABANDONED = "swap_requested", "activated", "held", "swap_abandoned"
REPAIR_REQUESTED = "repair_requested"


class RegistryError(RuntimeError):
    """A missing, incomplete or corrupt registry version."""


def version_number(version: str) -> int:
    """N of ``"vN"``; raises RegistryError for anything else."""
    match = VERSION_RE.match(version)
    if not match:
        raise RegistryError(f"not a version name: {version!r} (expected vN)")
    return int(match.group(1))


class VersionCollections(NamedTuple):
    """The index collections embedded by one version: ``products_vN`` (one point per product), ``users_vN``
    (one per shopper) and ``groups_vN`` (one per product text, derived from the products: cartwise/groups.py,
    what a page ranks)."""

    products: str
    users: str
    groups: str


def collection_names(version: str) -> VersionCollections:
    """The collections embedded by ``version``. Raises RegistryError for a name that is not ``vN``."""
    number = version_number(version)
    return VersionCollections(f"products_v{number}", f"users_v{number}", f"groups_v{number}")


def is_version_collection(name: str) -> bool:
    """Whether ``name`` is one of some version's collections (the form :func:`collection_names` gives)."""
    return bool(_COLLECTION_RE.match(name))


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so a reader sees the old or the new content, never a mix."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


class VersionLifecycle(ABC):
    """The states of the versions under ``root``: the ``ACTIVE`` file (the serving version's name) and
    ``lifecycle.json`` (activation history, for rollback, and why a candidate was held back).

    The storage of the versions themselves is :class:`cartwise.registry.ModelRegistry`, which derives from
    this class and provides ``root`` and :meth:`manifest`."""

    root: Path

    @abstractmethod
    def manifest(self, version: str) -> Any:
        """The manifest of a complete ``version``; raises RegistryError if it is missing."""

    def active(self) -> str | None:
        """The active version's name, or None before any is activated."""
        path = self.root / ACTIVE_FILE
        return path.read_text().strip() if path.exists() else None

    def activate(self, version: str) -> None:
        """Make ``version`` the active one (atomic) and record it in the activation history.
        Raises RegistryError if it is not complete."""
        self.manifest(version)
        lifecycle, current = self._lifecycle(), self.active()
        if current and current not in lifecycle["history"]:  # activated before the history was kept
            lifecycle["history"].append(current)
        lifecycle["history"].append(version)
        atomic_write(self.root / LIFECYCLE_FILE, json.dumps(lifecycle, indent=1))
        atomic_write(self.root / ACTIVE_FILE, version + "\n")

    def rollback_target(self) -> str | None:
        """The most recently active version other than the current one that still exists, or None."""
        history, current = self._lifecycle()["history"], self.active()
        return next((v for v in reversed(history) if v != current and (self.root / v).is_dir()), None)

    def collect_garbage(self, keep_retired: int = 1) -> list[str]:
        """Delete retired versions but the ``keep_retired`` most recently active ones (rollback targets);
        active and candidate versions are never touched. Returns the deleted version names."""
        history, current = self._lifecycle()["history"], self.active()
        recent = [v for v in dict.fromkeys(reversed(history)) if v != current]  # newest first, unique
        doomed = [v for v in recent[keep_retired:] if (self.root / v).is_dir()]
        for version in doomed:
            shutil.rmtree(self.root / version)
        return doomed

    def hold(self, version: str, reason: str) -> None:
        """Record why ``version`` stays a candidate (e.g. the quality gate's verdict).
        Raises RegistryError if it is not complete."""
        self.manifest(version)
        lifecycle = self._lifecycle()
        lifecycle["reasons"][version] = reason
        atomic_write(self.root / LIFECYCLE_FILE, json.dumps(lifecycle, indent=1))

    def state(self, version: str) -> tuple[str, str | None]:
        """(candidate | active | retired, the recorded reason if any)."""
        lifecycle = self._lifecycle()
        state = ACTIVE if version == self.active() else RETIRED if version in lifecycle["history"] else CANDIDATE
        return state, lifecycle["reasons"].get(version)

    def _lifecycle(self) -> dict:
        path = self.root / LIFECYCLE_FILE
        lifecycle = json.loads(path.read_text()) if path.exists() else {}
        return {"history": lifecycle.get("history", []), "reasons": lifecycle.get("reasons", {})}


def ensure_active(registry: VersionLifecycle, first: Callable[[], str]) -> str:
    """The active version; with none active yet, activates the version ``first()`` makes (it publishes one,
    or names one the registry holds; the caller composes it, e.g. the pretrained encoder's served copy).
    Raises what ``first`` raises, and RegistryError for an incomplete version."""
    active = registry.active()
    if active is None:
        active = first()
        registry.activate(active)
    return active


class ModelUpdate(BaseModel):
    """One message: what happened to ``version`` (and from which ``previous`` active version), and why."""

    kind: Literal["swap_requested", "activated", "held", "swap_abandoned", "repair_requested"]
    version: str
    previous: str | None = None
    reason: str = ""
    at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))

    def encode(self) -> bytes:
        """The message value (UTF-8 JSON)."""
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, value: bytes) -> "ModelUpdate | None":
        """Parse a message value; None for anything that is not a ModelUpdate (logged by the caller)."""
        try:
            return cls.model_validate_json(value)
        except ValidationError:
            return None


def publish_update(settings: Settings, update: ModelUpdate, timeout_s: float = 10.0) -> None:
    """Send ``update`` to ``models.updates`` and wait for the broker's ack.

    Raises kafka.errors.KafkaError (e.g. NoBrokersAvailable when no broker runs at ``settings.bootstrap``)."""
    producer = make_producer(settings)
    try:
        producer.send(settings.topics.models_updates, key=update.version.encode(), value=update.encode()).get(timeout_s)
    finally:
        producer.close()


def request_swap(settings: Settings, version: str, reason: str, previous: str | None = None) -> None:
    """Ask the swap coordinator to backfill ``version``'s collections and activate it (``previous``: the
    version active when asked, for the record). Raises kafka.errors.KafkaError."""
    publish_update(settings, ModelUpdate(kind=SWAP_REQUESTED, version=version, previous=previous, reason=reason))


def request_repair(settings: Settings, active_version: str) -> None:
    """Ask the worker to rebuild the active version's collections from Kafka. Raises kafka.errors.KafkaError."""
    publish_update(settings, ModelUpdate(kind=REPAIR_REQUESTED, version=active_version, reason="operator: cartwise repair"))


class ServedVersion(Protocol):
    """What an API process serves for one version (encoders.runtime.ServingModel)."""

    version: str

    def warm_up(self) -> None:
        """Run the model once, so that its first allocation is not a request's."""


class ServedHolder(Protocol):
    """The holder of the served version (encoders.runtime.ActiveModel)."""

    @property
    def current(self) -> ServedVersion:
        """The version served at this instant."""

    def swap(self, model: ServedVersion) -> ServedVersion:
        """Serve ``model``; returns the one it replaces."""


class ModelFollower:
    """Keeps an API process's ``active`` holder on the registry's active version: follows ``models.updates``
    from its end (no consumer group: each process must see every message) and on an ``activated`` message
    loads the registry's active version (``load(version)``, e.g. ServingModel.load, which checks the
    sha256), warms it up, checks that its collections exist in ``index``, and swaps the holder's reference:
    encoder and collections move as one pair, and a request that already took its snapshot finishes on the
    version it started with. The previously served version stays loaded, so a rollback switches without
    reading a model from disk. ``preloaded`` returns a version this process has loaded already (the
    worker's write targets in the one-process service), so a swap does not load the same model twice.
    ``await start()`` / ``await stop()``."""

    def __init__(self, settings: Settings, registry: VersionLifecycle, active: ServedHolder,
                 index: AsyncVectorIndex, load: Callable[[str], ServedVersion],
                 preloaded: Callable[[str], ServedVersion | None] = lambda version: None) -> None:
        self.settings, self.registry, self.active, self.index = settings, registry, active, index
        self._load_version, self._preloaded = load, preloaded
        self._loaded: dict[str, ServedVersion] = {active.current.version: active.current}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Position at the topic's end, then catch up with the registry once, so an activation between
        this process loading its model and now is not missed. Raises aiokafka's errors."""
        self._consumer = tail_consumer(self.settings)
        await self._consumer.start()
        partition = TopicPartition(self.settings.topics.models_updates, 0)
        self._consumer.assign([partition])
        await self._consumer.seek_to_end(partition)
        await self.sync()
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        """Stop following (the serving model stays as it is)."""
        if self._task:
            self._task.cancel()
        if self._consumer:
            await self._consumer.stop()

    async def _follow(self) -> None:
        async for message in self._consumer:
            update = ModelUpdate.decode(message.value)
            if update is not None and update.kind == ACTIVATED:
                try:
                    await self.sync()
                except Exception:  # noqa: BLE001 - keep serving the current version and keep following
                    log.exception("could not switch to %s; still serving %s", update.version,
                                  self.active.current.version)

    async def sync(self) -> None:
        """Switch to the registry's active version if it differs from the one served.
        Raises RegistryError for a corrupt version."""
        version = self.registry.active()
        if version is None or version == self.active.current.version:
            return
        if not all([await self.index.has_collection(name) for name in collection_names(version)]):
            log.error("registry says %s is active but its collections are missing; still serving %s",
                      version, self.active.current.version)
            return
        model = self._loaded.get(version) or self._preloaded(version) or await asyncio.to_thread(self._load, version)
        previous = self.active.swap(model)
        self._loaded = {version: model, previous.version: previous}
        log.info("switched from %s to %s", previous.version, version)

    def _load(self, version: str) -> ServedVersion:
        model = self._load_version(version)
        model.warm_up()
        return model
