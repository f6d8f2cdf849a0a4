"""``cartwise bench recovery``: replay REES46 into the embedded service (`cartwise serve` as a child
process, its durable broker included), SIGKILL its whole process group at random moments while the worker
is still consuming, start it again each time, and at the end compare what it kept with a rebuild from
the source events (issue #12).

The replay is cut at random points; after each part the service is killed at a random delay, while the
worker still works through the part (it lags the producer), so kills land mid-batch, between the history
Table write and the vector write, or between a write and the offset commit. At the end the service is
caught up (its consumer group's committed offsets reach the end of every source topic) and stopped
cleanly, and the bench reads the history changelog (Kafka, before the stop: the broker is the service's
child) and its index (Qdrant Edge, opened after the service let go of it), and compares them with what the
events say it must hold (cartwise.app.bench.consistency)."""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

from cartwise.app.bench.common import publish_all, say, scratch_settings
from cartwise.app.bench.consistency import Expected, caught_up, compare, stored_histories
from cartwise.app.broker import die_with_parent, port_open
from cartwise.datasets import rees46_records
from cartwise.settings import Settings

CATCH_UP_TIMEOUT_S = 600.0


class ServeProcess:
    """`cartwise serve` as a child in a process group of its own, configured by ``settings``, logging to ``log``
    at ``log_level`` (None: this process's level)."""

    def __init__(self, settings: Settings, log: Path, log_level: str | None = None) -> None:
        self.settings, self.log = settings, log
        self.log_level = log_level or logging.getLevelName(logging.getLogger().getEffectiveLevel())
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 120.0) -> float:
        """Spawn it and wait until its gRPC health check says SERVING; returns the seconds that took.
        Raises TimeoutError (the service is killed)."""
        s = self.settings
        env = {**os.environ, "CARTWISE_DATA_DIR": str(s.data_dir), "CARTWISE_APP_ID": s.app_id,
               "CARTWISE_EMBEDDED_KAFKA_PORT": str(s.embedded_kafka_port),
               "CARTWISE_EMBEDDED_STORAGE_PORT": str(s.storage_port), "CARTWISE_GRPC_PORT": str(s.grpc_port),
               "CARTWISE_RETENTION_S": repr(s.retention_s)}
        env.pop("CARTWISE_KAFKA_BOOTSTRAP", None)
        started = time.perf_counter()
        command = [sys.executable, "-m", "cartwise.app.cli", "--log-level", self.log_level, "serve"]
        # its own process group (killed whole), and SIGKILL when this process dies: an interrupted bench left
        # services running that skewed every later measurement (a scratch service's graceful stop can hang
        # under load; its broker and store still get their SIGTERM from it)
        self.proc = subprocess.Popen(command, env=env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True, preexec_fn=partial(die_with_parent, signal.SIGKILL))
        while not _serving(s, f"127.0.0.1:{s.grpc_port}"):
            status = self.proc.poll()
            if status is not None or time.perf_counter() - started > timeout_s:
                self.kill()
                what = f"exited with status {status}" if status is not None else f"did not come up in {timeout_s} s"
                tail = "".join(self.log.read_text(errors="replace").splitlines(keepends=True)[-60:])
                raise TimeoutError(f"cartwise serve {what} (log: {self.log}):\n{tail}")
            time.sleep(0.1)
        return time.perf_counter() - started

    def kill(self) -> None:
        """SIGKILL its whole process group (service, broker, store) and wait until their ports are free.
        Raises TimeoutError when a port stays held for 10 s."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
        # the broker and its store die with the group, but a restart must not find their ports still held
        deadline = time.monotonic() + 10.0
        while any(map(port_open, (self.settings.embedded_kafka_port, self.settings.storage_port))):
            if time.monotonic() > deadline:
                raise TimeoutError("the killed service's broker still holds its port after 10 s")
            time.sleep(0.05)

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, a clean stop; returns its exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)


def wait_caught_up(serve: ServeProcess, timeout_s: float = CATCH_UP_TIMEOUT_S) -> float:
    """Block until ``serve``'s worker group has no lag on the source topics (consistency.caught_up); returns
    the seconds that took. Raises TimeoutError."""
    started = time.perf_counter()
    while not caught_up(serve.settings):
        if time.perf_counter() - started > timeout_s:
            raise TimeoutError(f"the worker did not catch up in {timeout_s} s (log: {serve.log})")
        time.sleep(0.5)
    return time.perf_counter() - started


def check_against(serve: ServeProcess, expected: Expected) -> dict:
    """Stop the caught-up ``serve`` cleanly and compare what it kept with ``expected`` (consistency.compare:
    lost, double_applied, mismatched_users, mismatched_products). Its history Table is read from the
    changelog first: the broker stops with the service."""
    histories = stored_histories(serve.settings)
    serve.stop()
    return compare(serve.settings, expected, histories)


def _serving(settings: Settings, target: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from cartwise.client import channel_credentials

    # a blocking channel (callers may run inside an event loop), with the TLS the spawned service serves
    credentials = channel_credentials(settings)
    with grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="cartwise.v1.SearchService"), timeout=1.0)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def run_recovery_bench(settings: Settings, kills: int = 5, limit: int | None = None, seed: int = 0,
                       console=None) -> dict:
    """Replay REES46 (the first ``limit`` rows; None: all) into a scratch embedded service, SIGKILL it
    ``kills`` times at random moments and restart it, then compare (module doc). Returns the keys of
    issue #12: events, kills, lost, double_applied, mismatched_users, mismatched_products, restart_s_p50
    (seconds from spawn to SERVING after a kill), and catch_up_s (from the last restart to caught up)."""
    rng = random.Random(seed)
    records = list(rees46_records(limit=limit))
    scratch, settings = scratch_settings(settings, "cartwise-recovery-")
    serve = ServeProcess(settings, scratch / "serve.log")
    cuts = sorted(rng.sample(range(1, len(records)), kills)) + [len(records)]
    restarts, start = [], 0
    serve.start()
    try:
        for n, cut in enumerate(cuts):
            publish_all(settings, records[start:cut])
            start = cut
            if n < kills:
                time.sleep(rng.uniform(0.0, 1.5))
                serve.kill()
                say(console, f"kill {n + 1}/{kills} after {cut} of {len(records)} events")
                restarts.append(serve.start())
        catch_up_s = wait_caught_up(serve)
        result = check_against(serve, Expected.of(records, settings.personalization.max_history))
    finally:
        serve.kill()
        shutil.rmtree(scratch, ignore_errors=True)
    return {"events": len(records), "kills": kills, **result,
            "restart_s_p50": float(np.median(restarts)) if restarts else None, "catch_up_s": catch_up_s}
