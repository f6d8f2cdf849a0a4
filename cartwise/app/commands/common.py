"""What several command groups share: the consoles, the settings of the invocation, the no-broker message and
the figures' report (a table, or one JSON document with ``--json``)."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from cartwise.settings import Settings

console = Console()
# benchmarks' progress lines go to stderr, so that `--json` leaves stdout one JSON document
progress = Console(stderr=True)


def settings_of(ctx: click.Context) -> Settings:
    """The Settings the root group read from the CARTWISE_* variables for this invocation."""
    return ctx.obj["settings"]


def no_broker(settings: Settings, err: Exception) -> str:
    """The message for a Kafka call that found no broker: where it looked and what to set."""
    where = "set CARTWISE_KAFKA_BOOTSTRAP" if settings.embedded_broker else "check CARTWISE_KAFKA_BOOTSTRAP"
    return f"no Kafka broker at {settings.bootstrap} ({err!r}): start `cartwise serve` or {where}"


def report(result: dict, as_json: bool) -> None:
    """Print ``result`` as one JSON document (``as_json``) or as a two-column table, floats to 3 decimals."""
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    table = Table(show_header=False)
    for key, value in result.items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    console.print(table)
