"""Real datasets into a service: `cartwise replay` (a dataset's events to Kafka) and `cartwise demo` (the story
on real data)."""

from __future__ import annotations

import asyncio

import click

from cartwise.app.commands.common import console, settings_of
from cartwise.datasets import DATASETS


@click.command()
@click.argument("dataset", type=click.Choice(DATASETS))
@click.option("--speed", default=0.0, show_default=True, help="Pace REES46 by event time, X times real time (0: max).")
@click.option("--bootstrap", default=None, help="A configured Kafka broker, as CARTWISE_KAFKA_BOOTSTRAP (default: that "
              "variable, else the embedded broker of a running `cartwise serve`).")
@click.pass_context
def replay(ctx: click.Context, dataset: str, speed: float, bootstrap: str | None) -> None:
    """Publish a real dataset's events to Kafka (REES46 in event-time order)."""
    from rich.progress import Progress

    from cartwise.app.replay import replay as run_replay
    from cartwise.datasets import records
    from cartwise.kafka_io import make_producer

    settings = settings_of(ctx)
    if bootstrap:
        settings = settings.model_copy(update={"kafka_bootstrap": bootstrap})
    with Progress(console=console) as progress:
        task = progress.add_task(f"replaying {dataset}", total=None)
        sent = run_replay(records(dataset), make_producer(settings), settings.topics, speed,
                          progress=lambda: progress.advance(task))
    console.print(f"published {sent} events to {settings.bootstrap}")

@click.command()
@click.option("--keep-serving", is_flag=True, help="Keep the demo's service up after the story, until Ctrl-C.")
@click.option("--products", "homedepot_products", default=5_000, show_default=True,
              help="Home Depot products to index at most (those judged for validation queries, in file order).")
@click.option("--carts", default=8, show_default=True, help="REES46 carts held back and sent live.")
@click.pass_context
def demo(ctx: click.Context, keep_serving: bool, homedepot_products: int, carts: int) -> None:
    """The story on real data: Home Depot search (BM25, semantic, hybrid, scored against human judgments), then
    live personalization on REES46 (a user's results before and after a cart event, timed)."""
    from cartwise.app.demo import run_demo

    asyncio.run(run_demo(settings_of(ctx), console, homedepot_products, carts, keep_serving))
