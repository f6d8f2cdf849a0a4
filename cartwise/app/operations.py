"""What an operator does to a running service: ask its status (AdminService), erase a user (an event on
the user control topic). A repair of the index is requested with cartwise.lifecycle.request_repair."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from google.protobuf.json_format import MessageToDict
from rich.table import Table

from cartwise.client import open_channel
from cartwise.events import UserForget, encode_event
from cartwise.kafka_io import make_producer
from cartwise.settings import Settings
from cartwise.v1 import admin_pb2 as pb
from cartwise.v1 import admin_pb2_grpc as pb_grpc


async def fetch_status(target: str | None = None, timeout_s: float = 10.0, settings: Settings | None = None) -> pb.Status:
    """AdminService.GetStatus of the service at ``target`` (host:port; default: the settings' API), with
    the TLS and token of ``settings`` (default: the environment's). Raises grpc.aio.AioRpcError
    (UNAVAILABLE when nothing listens there, UNAUTHENTICATED without a valid token)."""
    async with open_channel(settings or Settings(), target) as channel:
        return await pb_grpc.AdminServiceStub(channel).GetStatus(pb.GetStatusRequest(), timeout=timeout_s)


def status_dict(status: pb.Status) -> dict:
    """The status as one JSON-ready object (every field, defaults included; ``lag`` an integer)."""
    fields = MessageToDict(status, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    for key in ("products", "users", "lag", "applied", "dead_lettered", "stale", "forgotten", "expired"):
        fields[key] = int(fields[key])  # protobuf's JSON mapping writes 64-bit integers as strings
    fields["lag_by_topic"] = {t["topic"]: int(t["lag"]) for t in fields["lag_by_topic"]}
    return fields


def status_table(status: pb.Status) -> Table:
    """A two-column rich table of the status for people."""
    table = Table(title="cartwise status", show_header=False)
    lag = "unknown (broker unreachable)" if status.lag < 0 else f"{status.lag:,}"
    stream_time = (datetime.fromtimestamp(status.stream_time, timezone.utc).isoformat(timespec="seconds")
                   if status.stream_time else "-")
    rows = [("active version", status.active_version), ("role", status.role),
            ("products", f"{status.products:,}"), ("users", f"{status.users:,}"), ("consumer lag", lag)]
    rows += [(f"  {t.topic}", f"{t.lag:,}") for t in status.lag_by_topic if t.lag]
    if status.runs_worker:
        rows += [("applied", f"{status.applied:,}"), ("dead-lettered", f"{status.dead_lettered:,}"),
                 ("stale", f"{status.stale:,}"), ("users forgotten / expired", f"{status.forgotten:,} / {status.expired:,}"),
                 ("stream time", stream_time),
                 ("backfill", status.backfill_version + (" (repair)" if status.repair_running else "") or "-")]
    rows += [("broker", status.broker), ("index", status.index), ("uptime", f"{status.uptime_s:,.0f} s")]
    for name, value in rows:
        table.add_row(name, value)
    return table


def request_forget(settings: Settings, user_id: str, timeout_s: float = 10.0) -> UserForget:
    """Publish an erasure request for ``user_id`` on the user control topic and wait for the broker's ack;
    the worker that owns the user's partition removes the history, vectors and purchases. Raises
    pydantic.ValidationError for an invalid user id, kafka.errors.KafkaError when no broker answers."""
    request = UserForget(event_id=f"forget-{uuid.uuid4()}", event_time=datetime.now(timezone.utc), user_id=user_id)
    producer = make_producer(settings)
    try:
        producer.send(settings.topics.user_control, key=user_id.encode(), value=encode_event(request)).get(timeout_s)
    finally:
        producer.close()
    return request
