from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TopicLag(_message.Message):
    __slots__ = ("topic", "lag")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    topic: str
    lag: int
    def __init__(self, topic: _Optional[str] = ..., lag: _Optional[int] = ...) -> None: ...

class Status(_message.Message):
    __slots__ = ("active_version", "role", "products", "users", "lag", "lag_by_topic", "runs_worker", "applied", "dead_lettered", "stale", "forgotten", "expired", "stream_time", "broker", "index", "repair_running", "backfill_version", "uptime_s")
    ACTIVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    LAG_BY_TOPIC_FIELD_NUMBER: _ClassVar[int]
    RUNS_WORKER_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERED_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    FORGOTTEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    STREAM_TIME_FIELD_NUMBER: _ClassVar[int]
    BROKER_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REPAIR_RUNNING_FIELD_NUMBER: _ClassVar[int]
    BACKFILL_VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    active_version: str
    role: str
    products: int
    users: int
    lag: int
    lag_by_topic: _containers.RepeatedCompositeFieldContainer[TopicLag]
    runs_worker: bool
    applied: int
    dead_lettered: int
    stale: int
    forgotten: int
    expired: int
    stream_time: float
    broker: str
    index: str
    repair_running: bool
    backfill_version: str
    uptime_s: float
    def __init__(self, active_version: _Optional[str] = ..., role: _Optional[str] = ..., products: _Optional[int] = ..., users: _Optional[int] = ..., lag: _Optional[int] = ..., lag_by_topic: _Optional[_Iterable[_Union[TopicLag, _Mapping]]] = ..., runs_worker: _Optional[bool] = ..., applied: _Optional[int] = ..., dead_lettered: _Optional[int] = ..., stale: _Optional[int] = ..., forgotten: _Optional[int] = ..., expired: _Optional[int] = ..., stream_time: _Optional[float] = ..., broker: _Optional[str] = ..., index: _Optional[str] = ..., repair_running: _Optional[bool] = ..., backfill_version: _Optional[str] = ..., uptime_s: _Optional[float] = ...) -> None: ...
