"""`cartwise models`: the registry's versions (list, gc, quantize, distill, ensure-active) and swap requests to the
running service (activate, rollback)."""

from __future__ import annotations

import json

import click
from rich.table import Table

from cartwise.app.commands.common import console, no_broker, settings_of
from cartwise.settings import Settings


@click.group()
def models() -> None:
    """The model registry: candidate, active and retired encoder versions."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def models_list(ctx: click.Context, as_json: bool) -> None:
    """Every version with its state, when it was made, from what, and its validation nDCG@10."""
    from cartwise.registry import ModelRegistry

    registry = ModelRegistry(settings_of(ctx).models_dir)
    rows = []
    for version in registry.versions():
        manifest, (state, reason) = registry.manifest(version), registry.state(version)
        ndcg = manifest.metrics.get("homedepot_val", {}).get("ndcg@10")
        rows.append({"version": version, "state": state, "created_at": manifest.created_at.isoformat(timespec="seconds"),
                     "trained": bool(manifest.config.get("trained")), "negatives": manifest.config.get("negatives"),
                     "val_ndcg@10": ndcg, "reason": reason})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(*rows[0].keys()) if rows else Table("version")
    for row in rows:
        table.add_row(*("-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
    console.print(table)


@models.command("activate")
@click.argument("version")
@click.pass_context
def models_activate(ctx: click.Context, version: str) -> None:
    """Ask the running service to swap to VERSION (models.updates): its worker backfills the version's
    collections unless they are live, then activates it; every API process follows."""
    from cartwise.registry import ModelRegistry, RegistryError

    settings = settings_of(ctx)
    try:
        ModelRegistry(settings.models_dir).verify(version)
    except RegistryError as err:
        raise click.ClickException(str(err)) from None
    _request_swap(settings, version, "operator: cartwise models activate")


@models.command("rollback")
@click.pass_context
def models_rollback(ctx: click.Context) -> None:
    """Swap back to the version that was active before the current one (instant: it is kept live)."""
    from cartwise.registry import ModelRegistry

    settings = settings_of(ctx)
    target = ModelRegistry(settings.models_dir).rollback_target()
    if target is None:
        raise click.ClickException("nothing to roll back to: only one version was ever active")
    _request_swap(settings, target, "operator: cartwise models rollback")


def _request_swap(settings: Settings, version: str, reason: str) -> None:
    from kafka.errors import KafkaError

    from cartwise.lifecycle import request_swap

    try:
        request_swap(settings, version, reason)
    except KafkaError as err:
        raise click.ClickException(no_broker(settings, err)) from None
    click.echo(f"swap to {version} requested on {settings.topics.models_updates}; "
               "`cartwise models list` shows it active once the backfill is done")


@models.command("gc")
@click.option("--keep-retired", default=1, show_default=True, help="Retired versions kept for rollback.")
@click.pass_context
def models_gc(ctx: click.Context, keep_retired: int) -> None:
    """Delete old retired versions (never the active one or candidates)."""
    from cartwise.registry import ModelRegistry

    removed = ModelRegistry(settings_of(ctx).models_dir).collect_garbage(keep_retired)
    click.echo(f"removed: {', '.join(removed) or 'nothing'}")


@models.command("ensure-active")
@click.pass_context
def models_ensure_active(ctx: click.Context) -> None:
    """Print the active version; in a registry with none, first activate the pretrained encoder (as the first
    `serve` does). Run once before several processes share a new registry (compose's init service), so that
    they do not each publish one."""
    from cartwise.app.service import ensure_active_model
    from cartwise.registry import ModelRegistry

    settings = settings_of(ctx)
    click.echo(ensure_active_model(ModelRegistry(settings.models_dir), settings.encoder_precision))


@models.command("quantize")
@click.argument("version")
@click.pass_context
def models_quantize(ctx: click.Context, version: str) -> None:
    """Publish an int8 copy of VERSION as a new candidate version (encoders/quantize.py); evaluate it with
    `cartwise eval` and activate it with `cartwise models activate` like any other."""
    from cartwise.registry import ModelRegistry, RegistryError
    from encoders.quantize import publish_quantized

    try:
        manifest = publish_quantized(ModelRegistry(settings_of(ctx).models_dir), version)
    except RegistryError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"{manifest.version}: int8 copy of {version}")


@models.command("distill")
@click.argument("version")
@click.option("--layers", type=int, default=3, show_default=True, help="Transformer layers of the query tower.")
@click.option("--steps", type=int, default=None, help="Optimizer steps (default: the CPU configuration's).")
@click.pass_context
def models_distill(ctx: click.Context, version: str, layers: int, steps: int | None) -> None:
    """Publish VERSION's product tower with a LAYERS-layer query tower distilled from it (trainer/distill.py,
    minutes on one CPU thread) as a new candidate version; products keep VERSION's embeddings. Evaluate it
    with `cartwise eval` and activate it with `cartwise models activate` like any other: a swap moves both
    towers together."""
    import torch

    from cartwise.registry import RegistryError
    from trainer.distill import DistillConfig
    from trainer.query_tower import publish_distilled

    torch.set_num_threads(1)  # the service shares the cores
    try:
        manifest = publish_distilled(settings_of(ctx), version,
                                     DistillConfig(layers=layers, **({"steps": steps} if steps else {})))
    except (RegistryError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"{manifest.version}: {version}'s product tower with a {layers}-layer distilled query tower")
