"""Hot reload in an API process: follow ``models.updates`` and switch to the registry's active version.

Every API process reads the topic from its end (no consumer group: each must see every message). On an
``activated`` message it loads the registry's active version (checking its sha256), warms it up, checks
that its collections exist, and swaps the :class:`ActiveModel` reference: encoder and collections move
as one pair, and a request that already took its snapshot finishes on the version it started with. The
previously served version stays loaded, so a rollback switches without reading a model from disk."""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from cartwise.index import AsyncVectorIndex
from cartwise.kafka_io import tail_consumer
from cartwise.model_updates import ACTIVATED, ModelUpdate
from cartwise.registry import ModelRegistry, collection_names
from cartwise.settings import Settings
from encoders.runtime import ActiveModel, ServingModel

log = logging.getLogger(__name__)


class ModelFollower:
    """Keeps ``active`` on the registry's active version (module docstring). ``await start()`` /
    ``await stop()``. ``preloaded`` returns a version this process has loaded already (the worker's write
    targets in the one-process service), so a swap does not load the same model twice."""

    def __init__(self, settings: Settings, active: ActiveModel, index: AsyncVectorIndex,
                 preloaded: Callable[[str], ServingModel | None] = lambda version: None) -> None:
        self.settings, self.active, self.index, self._preloaded = settings, active, index, preloaded
        self.registry = ModelRegistry(settings.models_dir)
        self._loaded: dict[str, ServingModel] = {active.current.version: active.current}
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
        Raises cartwise.registry.RegistryError for a corrupt version."""
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

    def _load(self, version: str) -> ServingModel:
        model = ServingModel.load(self.registry, version, self.settings.encoder_threads)
        model.encoder.encode(["warm up"])  # the first run of a session allocates; keep it off a request
        return model
