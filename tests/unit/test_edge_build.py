"""The Qdrant Edge HNSW build runs in a child process on a copy of the shard (cartwise/index/edge.py,
edge_build.py): reads and writes go on meanwhile, writes made during the build survive the switch, the main
thread keeps running, a failing child leaves the live shard serving, and a crash during the switch is
undone at the next start."""

import threading
import time

import numpy as np
import pytest

from cartwise.index import CollectionSchema, EdgeIndex, IndexPoint
from cartwise.index import edge as edge_module
from cartwise.index.edge_build import IndexBuildError, build_copy

# 3,000 × 1024-d float32 is 12,000 KB: over Qdrant's 10,000 KB indexing threshold, so optimize builds
N, DIM = 3000, 1024
VECTORS = np.random.default_rng(7).standard_normal((N + 400, DIM)).astype(np.float32)


def pid(i: int) -> str:
    return f"00000000-0000-0000-0000-{i:012d}"


def point(i: int, tag: str = "loaded") -> IndexPoint:
    return IndexPoint(pid(i), VECTORS[i], {"i": i, "tag": tag})


@pytest.fixture
def index(tmp_path):
    index = EdgeIndex(tmp_path / "index", search_threads=1)
    index.create_collection("products", DIM, CollectionSchema())
    for start in range(0, N, 500):
        index.upsert("products", [point(i) for i in range(start, start + 500)])
    yield index
    index.close()


def state(index: EdgeIndex, queries: range) -> tuple:
    """Everything a reader sees: the count, every payload, and exact top-10 ids of some queries."""
    hits = index.retrieve("products", [pid(i) for i in range(N + 400)], with_vectors=False)
    exact = [[h.id for h in index.search("products", VECTORS[q], 10, exact=True)] for q in queries]
    return index.count("products"), sorted((h.id, h.payload["tag"]) for h in hits), exact


def build_while(index: EdgeIndex, step) -> int:
    """Optimize in a worker thread (as asyncio.to_thread does) and call ``step(i)`` on this thread until it
    ends; returns how many steps ran."""
    errors = []
    worker = threading.Thread(target=lambda: _capture(errors, index.optimize, "products"))
    worker.start()
    steps = 0
    while worker.is_alive():
        step(steps)
        steps += 1
    worker.join()
    if errors:
        raise errors[0]
    return steps


def _capture(errors: list, fn, *args) -> None:
    try:
        fn(*args)
    except Exception as err:  # re-raised on the test's thread
        errors.append(err)


def test_writes_and_deletes_during_the_build_are_kept_and_the_shard_is_indexed(index, tmp_path):
    reference = EdgeIndex(tmp_path / "reference", search_threads=1)  # the same writes, never optimized
    reference.create_collection("products", DIM, CollectionSchema())
    for start in range(0, N, 500):
        reference.upsert("products", [point(i) for i in range(start, start + 500)])

    def write(step: int) -> None:
        for target in (index, reference):
            target.upsert("products", [point(N + step % 400, f"new {step}"), point(step % N, f"changed {step}")])
            target.delete("products", [pid((7 * step + 3) % N)])
        index.search("products", VECTORS[step % N], 5)  # reads go on against the live shard
        time.sleep(0.005)

    steps = build_while(index, write)
    assert steps > 10  # writes really were interleaved with the build
    assert index.info("products").indexed_vectors_count > 0  # the optimized copy is what serves now
    assert state(index, range(0, N, 300)) == state(reference, range(0, N, 300))
    reference.close()


def test_the_main_thread_keeps_running_during_the_build(index):
    started = time.perf_counter()
    ticks = build_while(index, lambda _: time.sleep(0.001))
    build_ms = (time.perf_counter() - started) * 1000
    # a free 1 ms ticker makes ~1 tick per ms; when the build held the GIL it made 2 in the whole build
    assert ticks >= 0.1 * build_ms, f"{ticks} ticks in a {build_ms:.0f} ms build"


def test_a_failing_child_raises_and_leaves_the_live_shard_serving(index, monkeypatch, tmp_path):
    before = state(index, range(0, N, 500))

    def broken_copy(path):
        (path / "edge_config.json").write_text("not json")  # the child cannot load this copy
        return build_copy(path)

    monkeypatch.setattr(edge_module, "build_copy", broken_copy)
    with pytest.raises(IndexBuildError, match="HNSW build of .* failed"):
        index.optimize("products")
    assert state(index, range(0, N, 500)) == before
    assert index.info("products").indexed_vectors_count == 0
    index.upsert("products", [point(N, "after the failure")])
    assert index.count("products") == N + 1
    assert not (tmp_path / "index" / ".build").exists()  # the copy is cleaned up


def test_nothing_is_copied_below_the_indexing_threshold(tmp_path, monkeypatch):
    index = EdgeIndex(tmp_path / "index", search_threads=1)
    index.create_collection("small", 8, CollectionSchema())
    index.upsert("small", [IndexPoint(pid(i), np.ones(8, np.float32), {"i": i}) for i in range(100)])
    monkeypatch.setattr(edge_module, "build_copy", lambda path: pytest.fail("a copy was built"))
    index.optimize("small")
    assert index.count("small") == 100
    index.close()


def test_a_missing_collection_raises_key_error(tmp_path):
    index = EdgeIndex(tmp_path / "index")
    with pytest.raises(KeyError):
        index.optimize("nope")
    index.close()


def test_a_switch_interrupted_by_a_crash_is_undone_at_the_next_start(index, tmp_path):
    root = tmp_path / "index"
    before = state(index, range(0, N, 500))
    index.close()
    # as a process killed between moving the live shard aside and loading the copy leaves the root
    (root / ".build").mkdir()
    (root / "products").rename(root / ".build" / "products.old")
    (root / "products").mkdir()
    reopened = EdgeIndex(root, search_threads=1)
    assert state(reopened, range(0, N, 500)) == before
    assert not (root / ".build").exists()
    reopened.close()


def test_a_second_owner_of_the_root_is_refused(index, tmp_path):
    with pytest.raises(edge_module.IndexInUse):
        EdgeIndex(tmp_path / "index")
    index.upsert("products", [point(N, "the first owner writes on")])


def test_a_flush_cuts_the_write_ahead_log_back_to_one_closed_segment(tmp_path):
    """The log grows by a 32 MB segment per ~20,000 of these points until a flush; the worker flushes every
    INDEX_FLUSH_S (streams/app.py), or its users' upserts grew the log by gigabytes an hour."""
    index = EdgeIndex(tmp_path)
    index.create_collection("users", DIM, CollectionSchema())
    wal = tmp_path / "users" / "wal"
    try:
        for n in range(6):  # ~70 MB of upserts: two closed segments and more
            index.upsert("users", [point(i, tag=f"round {n}") for i in range(N)])
        assert len([f for f in wal.iterdir() if f.name.startswith("closed-")]) >= 2
        index.flush()
        assert len([f for f in wal.iterdir() if f.name.startswith("closed-")]) <= 1
        assert index.retrieve("users", [pid(0)])[0].payload["tag"] == "round 5"
    finally:
        index.close()
    reopened = EdgeIndex(tmp_path)
    try:
        assert reopened.count("users") == N and reopened.retrieve("users", [pid(N - 1)])[0].payload["tag"] == "round 5"
    finally:
        reopened.close()
