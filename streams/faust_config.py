"""The stream worker's faust app as configured from the settings: broker address and security, the fetch
bound, producer durability, commit and recovery choices (streams/faust_hooks.py's ``FastPollApp``)."""

from __future__ import annotations

import faust

from cartwise.kafka_io import idempotent, kafka_ssl_context
from cartwise.settings import Settings
from streams.faust_hooks import FastPollApp

_NEVER = 2**62  # faust's broker_commit_every: commit by the timer only
CHANGELOG_BATCH_BYTES = 512 * 1024  # under Kafka's and aiokafka's 1 MB request limit


def broker_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """faust's credentials for the broker's security (cartwise/kafka_io.py: the same protocol, SASL login
    and TLS context as every other client), or None for plaintext. Raises OSError for an unreadable TLS file."""
    protocol = "PLAINTEXT" if settings.embedded_broker else settings.kafka_security_protocol
    context = kafka_ssl_context(settings)
    if protocol.startswith("SASL"):  # faust derives SASL_SSL from the presence of a context
        return faust.SASLCredentials(username=settings.kafka_sasl_username, mechanism=settings.kafka_sasl_mechanism,
                                     password=settings.kafka_sasl_password.get_secret_value(), ssl_context=context)
    return faust.SSLCredentials(context) if context is not None else None


def worker_app(settings: Settings) -> FastPollApp:
    """The worker's faust app (not started; agents, timers and Tables are added by streams/app.py). Raises
    OSError for an unreadable TLS file."""
    return FastPollApp(
        settings.app_id, broker=f"kafka://{settings.bootstrap}", store="memory://", web_enabled=False,
        datadir=settings.data_dir / "faust",  # faust's default is the working directory
        topic_partitions=settings.partitions, fetch_max_wait_ms=settings.fetch_max_wait_ms,
        idempotent_producer=idempotent(settings), consumer_auto_offset_reset="earliest",
        producer_acks=-1 if not settings.embedded_broker else 1, stream_wait_empty=False,
        producer_linger=settings.producer_linger_ms / 1000,
        broker_session_timeout=settings.consumer_session_timeout_s,
        broker_rebalance_timeout=settings.consumer_session_timeout_s,
        broker_credentials=broker_credentials(settings),
        # faust also commits every broker_commit_every events from inside its intake loop, and a commit first
        # waits for every changelog send to be acknowledged: with full histories (kilobytes per user
        # update) intake stopped for seconds every 10,000 events and the worker fell behind for good at
        # 1,000 events/s (issue #28's soak). The commit timer (broker_commit_interval) commits from a task
        # of its own, with the same flush first, while intake goes on.
        broker_commit_every=_NEVER,
        # a record batch of the changelog holds this much (aiokafka's default, 16 KB, held three full histories,
        # and aiokafka sends a partition's batches one at a time: the changelog took 200 records/s)
        producer_max_batch_size=CHANGELOG_BATCH_BYTES,
        # faust refuses a persisted offset beyond the changelog's listed end, which the embedded broker
        # lists stale; streams/table_recovery.py checks it against the true end instead
        recovery_consistency_check=False,
    )
