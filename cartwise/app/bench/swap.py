"""``cartwise bench swap``: a model swap under a fixed Search load.

The embedded service is loaded with REES46 (or the Home Depot catalog) on scratch copies of the active
version and the candidate (the real registry is never touched; with no candidate there, the bench publishes
an int8 copy of what is served in its scratch registry); a load-generator process offers a fixed rate of
Search requests and records every answer's model and index version; after ``before_s`` seconds the swap is requested on
models.updates, and the load keeps running through the backfill and ``after_s`` seconds past the switch."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from cartwise.app.bench.common import loaded_service, percentiles_ms
from cartwise.app.bench.loadgen import read_records
from cartwise.app.bench.plots import plot_timeline
from cartwise.app.bench.search import homedepot_workload, rees46_queries
from cartwise.lifecycle import collection_names, request_swap
from cartwise.machine import machine_info
from cartwise.registry import ModelRegistry, RegistryError
from cartwise.settings import Settings
from encoders.quantize import publish_quantized

SWAP_TIMEOUT_S = 1800.0


def swap_pair(models_dir: Path, candidate: str | None) -> tuple[str, str] | None:
    """(the user's active version, the candidate: ``candidate`` or the newest other version), read from
    the registry at ``models_dir``; None when no ``candidate`` is named and the registry holds no such
    pair (the bench then swaps to a copy it makes, :func:`fresh_copy`). Raises RegistryError for a named
    ``candidate`` without an active version beside it, or equal to it."""
    registry = ModelRegistry(models_dir) if models_dir.is_dir() else None
    active = registry.active() if registry else None
    others = [v for v in registry.versions() if v != active] if registry else []
    if candidate is None and (active is None or not others):
        return None
    candidate = candidate or others[-1]
    if active is None or candidate == active:
        raise RegistryError(f"bench swap to {candidate} needs an active version other than it: "
                            "activate one first, or leave out --version")
    return active, candidate


def fresh_copy(models_dir: Path, active: str) -> str:
    """Publish, in the (scratch) registry at ``models_dir``, another int8 copy of what ``active`` serves
    (its source, or itself) and return its version: a swap to it re-embeds the whole catalog with an
    equal encoder, so the bench measures the swap's cost and not a model change."""
    registry = ModelRegistry(models_dir)
    return publish_quantized(registry, registry.manifest(active).config.get("quantized_from") or active).version


def _mixed(record: dict) -> bool:
    return record["index_version"] != collection_names(record["model_version"]).products


def summarize(records: list[dict], requested: float, switched: float) -> dict:
    """Counts and latency percentiles (ms) of requests started before the swap request, during the swap
    (request to switch) and after it."""
    ok = [r for r in records if r["error"] is None]
    phases = {"before": [r["latency_ms"] for r in ok if r["start"] < requested],
              "during": [r["latency_ms"] for r in ok if requested <= r["start"] < switched],
              "after": [r["latency_ms"] for r in ok if r["start"] >= switched]}
    figures = {"requests": len(records), "errors": len(records) - len(ok), "mixed_version": sum(map(_mixed, ok))}
    for phase, latencies in phases.items():
        spread = percentiles_ms([ms / 1000 for ms in latencies]) if latencies else {"p50_ms": None, "p99_ms": None}
        figures |= {f"requests_{phase}": len(latencies), **{f"{k}_{phase}": v for k, v in spread.items()}}
    versions: dict[str, int] = {}
    for r in ok:
        versions[r["model_version"]] = versions.get(r["model_version"], 0) + 1
    return figures | {"answers_by_version": versions}


async def run_swap_bench(settings: Settings, version: str | None, qps: float, before_s: float, after_s: float,
                         console, plot: Path | None = None, catalog: str = "rees46") -> dict:
    """Swap to ``version`` (None: the pair :func:`swap_pair` finds, else a :func:`fresh_copy`) under ``qps``
    Search/s (module docstring) on ``catalog`` (REES46 replayed whole, or :func:`homedepot_workload`).
    Returns the figures (latencies in ms). Raises RegistryError for a ``version`` there is no swapping to,
    TimeoutError if the swap takes too long."""
    pair = swap_pair(settings.models_dir, version)
    records, queries = homedepot_workload() if catalog == "homedepot" else (None, rees46_queries())
    work = Path(tempfile.mkdtemp(prefix="cartwise-swap-load-"))
    try:
        async with loaded_service(settings, console, list(pair) if pair else None, records=records) as service:
            active = service.active.current.version
            candidate = pair[1] if pair else await asyncio.to_thread(fresh_copy, service.settings.models_dir, active)
            (work / "queries.json").write_text(json.dumps(queries))
            load = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cartwise.app.bench.loadgen", f"127.0.0.1:{service.port}", str(qps), "86400",
                str(work / "queries.json"), str(work / "records.jsonl"), stdout=asyncio.subprocess.PIPE)
            await asyncio.sleep(before_s)
            requested = time.time()
            await asyncio.to_thread(request_swap, service.settings, candidate, "bench swap")
            with console.status(f"swapping {active} -> {candidate} under {qps:.0f} Search/s"):
                await _wait_for_switch(service, candidate)
            switched = time.time()
            await asyncio.sleep(after_s)
            load.send_signal(signal.SIGTERM)
            await load.communicate()
            products = service.index.count(service.active.current.products)
            stats = dict(service.worker.swaps.stats)
        records = read_records(work / "records.jsonl")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if plot:
        plot_timeline(records, requested, switched, plot)
    return {**summarize(records, requested, switched), "swap_s": switched - requested,
            "backfill_products_per_s": stats["products_per_s"], "backfill_products": stats["products"],
            "backfill_products_s": stats["products_s"], "backfill_users": stats["users"],
            "backfill_users_s": stats["users_s"], "from": active, "to": candidate, "products": products,
            "offered_qps": qps, "catalog": catalog, "machine": machine_info(),
            "command": f"cartwise bench swap --catalog {catalog}" + (f" --version {candidate}" if pair else "")
                       + f" --qps {qps:g} --before {before_s:g} --after {after_s:g}"
                       + (f" --plot {plot}" if plot else "") + " --json"}


async def _wait_for_switch(service, version: str) -> None:
    deadline = time.monotonic() + SWAP_TIMEOUT_S
    while service.active.current.version != version:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the swap to {version} did not finish within {SWAP_TIMEOUT_S:.0f} s")
        await asyncio.sleep(0.02)
