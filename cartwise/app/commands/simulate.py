"""`cartwise simulate`: simulated shoppers searching a running service and acting on its answers
(cartwise/app/simulation/)."""

from __future__ import annotations

import asyncio

import click

from cartwise.app.commands.common import (
    console,
    no_broker,
    progress,
    report,
    settings_of,
)


@click.command()
@click.option("--catalog", "catalog_name", type=click.Choice(["homedepot"]), default="homedepot", show_default=True,
              help="The catalog and its train-split queries.")
@click.option("--shoppers", default=100, show_default=True, help="Simulated shoppers (user ids sim<seed>-<i>).")
@click.option("--searches", default=1000, show_default=True, help="Searches in all.")
@click.option("--rate", default=40.0, show_default=True, help="Searches started per second.")
@click.option("--seed", default=0, show_default=True, help="Seed of the tastes, the queries and the clicks.")
@click.option("--products", "max_products", type=int, default=None,
              help="Index at most this many products (the judged ones of the first train queries, then others); "
                   "default: the whole catalog.")
@click.option("--retrieval", type=click.Choice(["hybrid", "dense", "lexical"]), default="hybrid", show_default=True,
              help="The ranking every search asks for.")
@click.option("--zipf", "zipf_exponent", default=1.0, show_default=True,
              help="Exponent s of the queries' Zipf law (rank k drawn with probability ∝ k^-s).")
@click.option("--target", default=None, help="host:port of the service (default: CARTWISE_GRPC_HOST:PORT).")
@click.option("--bootstrap", default=None, help="A configured Kafka broker, as CARTWISE_KAFKA_BOOTSTRAP (default: that "
              "variable, else the embedded broker of a running `cartwise serve`).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.pass_context
def simulate(ctx: click.Context, catalog_name: str, shoppers: int, searches: int, rate: float, seed: int,
             max_products: int | None, retrieval: str, zipf_exponent: float, target: str | None,
             bootstrap: str | None, as_json: bool) -> None:
    """Simulated shoppers search the running service (gRPC) at RATE searches per second and send what a
    position-based click model says they viewed, carted and bought to Kafka, with the query and the answer's
    request id. Loads the catalog through Kafka first when the service lacks it."""
    import grpc
    from kafka.errors import KafkaError
    from rich.progress import Progress

    from cartwise.app.simulation.catalog import homedepot_catalog
    from cartwise.app.simulation.driver import SimulationConfig, retrieval_ranker
    from cartwise.app.simulation.driver import simulate as run
    from cartwise.client import Retrieval

    settings = settings_of(ctx)
    if bootstrap:
        settings = settings.model_copy(update={"kafka_bootstrap": bootstrap})
    config = SimulationConfig(shoppers=shoppers, searches=searches, rate=rate, seed=seed, zipf_exponent=zipf_exponent)
    ranker = retrieval_ranker(Retrieval[retrieval.upper()])
    catalog = homedepot_catalog(settings.data_dir, max_products)
    with Progress(console=progress, transient=as_json) as bars:
        tasks: dict[str, int] = {}

        def show(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=total)
            bars.update(tasks[stage], completed=done, total=total)

        try:
            result = asyncio.run(run(settings, catalog, config, lambda shopper, index: ranker, target, show))
        except grpc.aio.AioRpcError as err:
            raise click.ClickException(f"the service failed: {err.code().name}: {err.details()} (start one with "
                                       "`cartwise serve`, or set CARTWISE_GRPC_PORT / --target)") from None
        except KafkaError as err:
            raise click.ClickException(no_broker(settings, err)) from None
        except TimeoutError as err:
            raise click.ClickException(str(err)) from None
    summary = result.summary()
    if not as_json:
        console.print(f"{catalog_name}: {len(catalog.records):,} products, {len(catalog.qrels):,} train queries, "
                      f"shoppers with brand{' and category' if catalog.categories else ''} tastes")
    report(summary, as_json)
