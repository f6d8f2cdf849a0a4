"""`cartwise search`: one Search call to the running service, printed as tables (hits, facets) or JSON."""

from __future__ import annotations

import json

import click
from rich.table import Table

from cartwise.app.commands.common import console, settings_of

def hits_table(response, title: str, highlight: str | None = None, first_rank: int = 1) -> Table:
    """A rich table of a search result's hits, numbered from ``first_rank`` (``highlight`` marks one product id)."""
    table = Table(title=title, title_justify="left")
    for column in ("#", "product", "title", "category", "price", "score", "semantic", "personal"):
        table.add_column(column, justify="right" if column in ("#", "price", "score", "semantic", "personal") else "left")
    for rank, hit in enumerate(response.hits, start=first_rank):
        style = "bold yellow" if hit.product_id == highlight else None
        table.add_row(str(rank), hit.product_id, hit.title, " > ".join(hit.category_path), f"{hit.price:.2f}",
                      f"{hit.score:.3f}", f"{hit.semantic_score:.3f}", f"{hit.personal_score:.3f}", style=style)
    return table


SORTS = {"relevance": "RELEVANCE", "price-asc": "PRICE_ASC", "price-desc": "PRICE_DESC"}


def facets_table(facets) -> Table:
    """A rich table of a result's facet counts: one row per value, grouped by facet."""
    table = Table(title=f"facets over {facets.candidates} candidates", title_justify="left")
    for column in ("facet", "value", "count"):
        table.add_column(column, justify="right" if column == "count" else "left")
    for name, counts in (("category", facets.categories), ("brand", facets.brands)):
        for value, count in counts:
            table.add_row(name, value, str(count))
    for band in facets.price_bands:
        table.add_row("price", f"{band.min:g}-{band.max:g}" if band.max is not None else f"{band.min:g}+",
                      str(band.count))
    return table


@click.command()
@click.argument("query", default="")
@click.option("--user", "user_id", default="", help="Personalize for this user id.")
@click.option("--limit", default=10, show_default=True)
@click.option("--offset", default=0, show_default=True, help="Hits to skip (the next pages).")
@click.option("--sort", type=click.Choice(list(SORTS)), default="relevance", show_default=True,
              help="Relevance, or price over the 200 most relevant products.")
@click.option("--in-stock-boost", type=float, default=None, help="Added to in-stock products' scores (0..10).")
@click.option("--facets", "with_facets", is_flag=True, help="Also count categories, brands and price bands.")
@click.option("--json", "as_json", is_flag=True, help="Print the response as JSON.")
@click.option("--target", default=None, help="host:port of the API (default: CARTWISE_GRPC_HOST:PORT).")
@click.pass_context
def search(ctx: click.Context, query: str, user_id: str, limit: int, offset: int, sort: str,
           in_stock_boost: float | None, with_facets: bool, as_json: bool, target: str | None) -> None:
    """Search the running service."""
    from dataclasses import asdict

    import grpc

    from cartwise.client import Client, Sort
    from cartwise.credentials import SecurityConfigError

    boost = {} if in_stock_boost is None else {"in_stock_boost": in_stock_boost}
    try:
        with Client(target, settings_of(ctx)) as client:
            result = client.search(query, user_id=user_id, limit=limit, offset=offset, sort=Sort[SORTS[sort]],
                                   facets=with_facets, **boost)
    except grpc.RpcError as err:  # the status and the field at fault
        raise click.ClickException(f"{err.code().name}: {err.details()}") from None
    except SecurityConfigError as err:
        raise click.UsageError(str(err)) from None
    if as_json:
        click.echo(json.dumps({**asdict(result), "retrieval": result.retrieval.name.lower()}, indent=2))
    else:
        console.print(hits_table(result, f"{query!r} user={user_id or '-'} model={result.model_version} "
                                         f"alpha={result.personalization_weight:.2f}", first_rank=offset + 1))
        if result.facets is not None:
            console.print(facets_table(result.facets))
