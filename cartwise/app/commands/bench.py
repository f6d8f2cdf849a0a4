"""`cartwise bench`: the benchmarks (docs/benchmarks.md); figures as a table or JSON, progress on stderr."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from cartwise.app.commands.common import progress, report, settings_of
from cartwise.retrieval import RETRIEVALS


@click.group()
def bench() -> None:
    """Benchmarks (print figures; see docs/benchmarks.md)."""


def _steps(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    """--steps "50,100": offered rates, positive, ascending and distinct."""
    if value is None:
        return None
    try:
        steps = tuple(float(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter("a comma-separated list of Search/s, e.g. 50,100,200") from None
    if any(q <= 0 for q in steps) or list(steps) != sorted(set(steps)):
        raise click.BadParameter("rates must be positive, ascending and distinct")
    return steps


@bench.command("search")
@click.option("--qps", type=float, default=None, help="Offered Search/s.  [default: 200; not with --overload/--sweep]")
@click.option("--seconds", default=20.0, show_default=True,
              help="Length of the load (with --overload: of each phase; with --sweep: of each step).")
@click.option("--retrieval", type=click.Choice(RETRIEVALS), default="hybrid", show_default=True)
@click.option("--catalog", type=click.Choice(["rees46", "homedepot"]), default="rees46", show_default=True,
              help="REES46 (5,541 products, its own users) or Home Depot (54,667 products, synthetic histories).")
@click.option("--sweep", is_flag=True, help="Offer each of --steps in turn to one server: per step served QPS, "
                                            "refused share, answered p50/p99, CPU; the knee and the floor.")
@click.option("--steps", callback=_steps, default=None,
              help="With --sweep: the offered Search/s, comma-separated.  [default: 50,100,150,200,300,400]")
@click.option("--overload", is_flag=True,
              help="Offer 2x the knee open-loop (the knee: --knee-qps, else the capacity a closed loop measures "
                   "first): served QPS and p99, rejection rate.")
@click.option("--knee-qps", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="With --overload: the knee (knee_qps of a --sweep on this machine) instead of the capacity phase.")
@click.option("--deadline-ms", default=250.0, show_default=True, help="gRPC deadline per request with --overload.")
@click.option("--repeat-rate", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="With --catalog homedepot: the share of requests that repeat an earlier query (an assumption: "
                   "no query log exists here). CARTWISE_QUERY_CACHE_SIZE=0 measures without the query cache.")
@click.option("--merchandise", is_flag=True,
              help="Every request sorts by price, boosts in-stock products and counts facets (its candidate set).")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the latency histogram (PNG), e.g. docs/img/search_latency_homedepot.png; with --sweep "
                   "the latency-throughput plot, e.g. docs/img/search_sweep_homedepot.png.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def bench_search(ctx: click.Context, qps: float | None, seconds: float, retrieval: str, catalog: str, sweep: bool,
                 steps: tuple[float, ...] | None, overload: bool, knee_qps: float | None, deadline_ms: float,
                 repeat_rate: float, merchandise: bool, plot: Path | None, as_json: bool) -> None:
    """gRPC Search p50/p99 and QPS at a fixed offered load, next to the floor: query encode + the served
    hybrid engine query alone. With --sweep: a latency-throughput sweep and its knee. With --overload: what
    Search serves and refuses at twice the knee."""
    from cartwise.app.bench.search import SWEEP_STEPS, run_overload_bench, run_search_bench, run_sweep_bench

    if sweep and overload:
        raise click.UsageError("--sweep and --overload are two runs; run one, then the other")
    if (sweep or overload) and (qps is not None or merchandise):
        raise click.UsageError("--sweep and --overload choose their own loads, of plain requests; drop --qps and "
                               "--merchandise")
    if steps is not None and not sweep or knee_qps is not None and not overload:
        raise click.UsageError("--steps goes with --sweep, --knee-qps with --overload")
    if overload and plot:
        raise click.UsageError("--plot draws a fixed load or a sweep; drop it with --overload")
    settings = settings_of(ctx)
    if sweep:
        run = run_sweep_bench(settings, steps or SWEEP_STEPS, seconds, progress, retrieval, catalog, repeat_rate, plot)
    elif overload:
        run = run_overload_bench(settings, seconds, progress, retrieval, deadline_ms, catalog, knee_qps, repeat_rate)
    else:
        run = run_search_bench(settings, qps or 200.0, seconds, progress, retrieval, catalog, repeat_rate,
                               merchandise, plot)
    report(asyncio.run(run), as_json)


@bench.command("freshness")
@click.option("--events", default=100, show_default=True, help="Probe events (half cart, half catalog).")
@click.option("--background-rate", default=1000.0, show_default=True, help="Background events/s.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def bench_freshness(ctx: click.Context, events: int, background_rate: float, as_json: bool) -> None:
    """Time from producing an event to it changing a Search answer, under background load."""
    from cartwise.app.bench.freshness import run_freshness_bench

    report(asyncio.run(run_freshness_bench(settings_of(ctx), events, background_rate, progress)), as_json)


@bench.command("ingest")
@click.option("--events", default=50_000, show_default=True, help="Behavior events (REES46 shapes, many users).")
@click.option("--broker", "broker_storage", type=click.Choice(["disk", "memory"]), default="disk", show_default=True,
              help="The embedded broker's storage: disk (the durable default) or memory.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the behavior phase's events/s over time (PNG), e.g. docs/img/ingest_throughput.png.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def bench_ingest(ctx: click.Context, events: int, broker_storage: str, plot: Path | None, as_json: bool) -> None:
    """Catalog upserts and behavior events through the real worker as fast as it takes them, next to a raw
    aiokafka read of the same topics (ratio), with CPU per event and a check against the slow path."""
    from cartwise.app.bench.ingest import run_ingest_bench

    report(asyncio.run(run_ingest_bench(settings_of(ctx), events, broker_storage, progress, plot=plot)), as_json)


@bench.command("recovery")
@click.option("--kills", default=5, show_default=True, help="SIGKILLs of the service during the replay.")
@click.option("--limit", type=int, default=None, help="Replay only the first N REES46 rows (default: all).")
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def bench_recovery(ctx: click.Context, kills: int, limit: int | None, seed: int, as_json: bool) -> None:
    """Replay REES46 into `cartwise serve`, kill -9 it at random moments, restart it, and compare what it
    kept with a rebuild from the source events (lost, double_applied, mismatched_*: all 0 is the goal)."""
    from cartwise.app.bench.recovery import run_recovery_bench

    report(run_recovery_bench(settings_of(ctx), kills, limit, seed, progress), as_json)


@bench.command("soak")
@click.option("--rate", default=1000.0, show_default=True,
              help="Behavior events/s (REES46 shapes over its own users and products).")
@click.option("--minutes", type=click.IntRange(min=1), default=60, show_default=True, help="Minutes of load.")
@click.option("--catalog-rate", default=20.0, show_default=True,
              help="Catalog upserts/s of existing products (price and stock changes).")
@click.option("--qps", type=click.FloatRange(min=0.0, min_open=True), default=20.0, show_default=True,
              help="Offered Search/s (open loop).")
@click.option("--retention-s", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="CARTWISE_RETENTION_S of the scratch service (default: this environment's setting).")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the per-minute series (PNG), e.g. docs/img/soak.png.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def bench_soak(ctx: click.Context, rate: float, minutes: int, catalog_rate: float, qps: float,
               retention_s: float | None, plot: Path | None, as_json: bool) -> None:
    """Behavior events, catalog upserts, Search and a freshness probe per second on one scratch `cartwise serve`
    (durable broker) for --minutes: freshness, the broker's objects and bytes, CPU and memory per minute; then a
    kill -9, the time to SERVING and to lag 0, and a comparison with a rebuild from the events."""
    from cartwise.app.bench.soak import run_soak_bench

    report(asyncio.run(run_soak_bench(settings_of(ctx), rate, minutes, catalog_rate, qps, retention_s, plot,
                                       progress)), as_json)


@bench.command("swap")
@click.option("--version", default=None, help="Version to swap to (default: the newest one that is not active; "
                                            "with none, an int8 copy of the active one made for the bench).")
@click.option("--qps", default=100.0, show_default=True, help="Offered Search load throughout.")
@click.option("--before", "before_s", default=10.0, show_default=True, help="Seconds of load before the request.")
@click.option("--after", "after_s", default=10.0, show_default=True, help="Seconds of load after the switch.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the latency timeline (PNG), e.g. docs/img/swap_latency.png.")
@click.option("--catalog", type=click.Choice(["rees46", "homedepot"]), default="rees46", show_default=True,
              help="REES46 (5,541 products) or Home Depot (54,667 products, synthetic histories, its queries).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def bench_swap(ctx: click.Context, version: str | None, qps: float, before_s: float, after_s: float,
               plot: Path | None, catalog: str, as_json: bool) -> None:
    """A model swap (backfill, dual-write, switch) under a fixed Search load: failed and mixed-version
    answers, p99 before and during the swap, backfill products/s. Works on copies of registry versions; the
    user's registry is only read."""
    from cartwise.app.bench.swap import run_swap_bench
    from cartwise.registry import RegistryError

    try:
        result = asyncio.run(run_swap_bench(settings_of(ctx), version, qps, before_s, after_s, progress, plot, catalog))
    except RegistryError as err:
        raise click.ClickException(str(err)) from None
    report(result, as_json)
