"""`cartwise serve`, and the commands that ask a running service: `status`, `health` (container probes),
`repair` and `users forget`."""

from __future__ import annotations

import asyncio
import json
import signal

import click

from cartwise.app.commands.common import console, no_broker, settings_of


@click.command()
@click.option("--role", type=click.Choice(["all", "worker", "api"]), default="all", show_default=True,
              help="all: worker and API in one process (embedded default); worker or api: one half, beside the "
                   "other (needs CARTWISE_KAFKA_BOOTSTRAP, and CARTWISE_QDRANT_URL for api).")
@click.pass_context
def serve(ctx: click.Context, role: str) -> None:
    """Run the stream worker and the gRPC API (embedded broker and Qdrant Edge unless configured)."""
    from cartwise.app.service import RoleError, Service
    from grpc_api.security import SecurityConfigError

    async def run() -> None:
        try:
            service = Service(settings_of(ctx), role)
        except (RoleError, SecurityConfigError) as err:
            raise click.UsageError(str(err)) from None
        await service.start()
        api = (f"gRPC on {service.settings.grpc_host}:{service.port}, model {service.active.current.version}"
               if service.api else "no API")
        console.print(f"[green]{role}[/]: {api}, Kafka at {service.settings.bootstrap}")
        if service.playground:
            console.print(f"playground: http://{service.settings.playground_host}:{service.playground.port}/")
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await stop.wait()
        await service.stop()

    asyncio.run(run())

@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (active_version, products, users, lag, ...).")
@click.option("--target", default=None, help="host:port of the service (default: CARTWISE_GRPC_HOST:PORT).")
@click.pass_context
def status(ctx: click.Context, as_json: bool, target: str | None) -> None:
    """What the running service is doing: active version, index sizes, consumer lag, counters since start.
    Exits non-zero when no service answers."""
    import grpc

    from cartwise.client import api_target
    from cartwise.app.operations import fetch_status, status_dict, status_table
    from grpc_api.security import SecurityConfigError

    settings = settings_of(ctx)
    target = target or api_target(settings)
    try:
        answer = asyncio.run(fetch_status(target, settings=settings))
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.UNAVAILABLE:
            raise click.ClickException(f"no Cartwise service answers on {target}: start one with `cartwise serve` "
                                       "(or set CARTWISE_GRPC_PORT / --target, and CARTWISE_TLS_CA_FILE for a "
                                       "TLS server)") from None
        raise click.ClickException(f"{err.code().name}: {err.details()}") from None
    except SecurityConfigError as err:
        raise click.UsageError(str(err)) from None
    if as_json:
        click.echo(json.dumps(status_dict(answer), indent=2))
    else:
        console.print(status_table(answer))


@click.group()
def users() -> None:
    """Users' data: erasure for privacy requests."""


@users.command("forget")
@click.argument("user_id")
@click.pass_context
def users_forget(ctx: click.Context, user_id: str) -> None:
    """Erase USER_ID's history, vectors and purchases from every live version (an event on the user control
    topic; the running worker applies it within a second, `cartwise status` counts it as forgotten)."""
    from kafka.errors import KafkaError
    from pydantic import ValidationError

    from cartwise.app.operations import request_forget

    settings = settings_of(ctx)
    try:
        request = request_forget(settings, user_id)
    except ValidationError as err:
        raise click.ClickException(f"user_id: {err.errors()[0]['msg']}") from None
    except KafkaError as err:
        raise click.ClickException(no_broker(settings, err)) from None
    click.echo(f"erasure of {user_id!r} requested on {settings.topics.user_control} ({request.event_id})")


@click.command()
@click.pass_context
def repair(ctx: click.Context) -> None:
    """Ask the running service to rebuild the active version's collections from Kafka (the catalog topic and
    the user-history changelog), in place while it serves; `cartwise status` shows it running."""
    from kafka.errors import KafkaError

    from cartwise.lifecycle import request_repair
    from cartwise.registry import ModelRegistry

    settings = settings_of(ctx)
    active = ModelRegistry(settings.models_dir).active()
    if active is None:
        raise click.ClickException(f"no active model under {settings.models_dir}: nothing to repair")
    try:
        request_repair(settings, active)
    except KafkaError as err:
        raise click.ClickException(no_broker(settings, err)) from None
    click.echo(f"repair of {active} requested on {settings.topics.models_updates}")


@click.command()
@click.option("--target", default=None, help="host:port of a gRPC API to ask (default: CARTWISE_GRPC_HOST:PORT).")
@click.option("--service", default="", help="Health service name to ask about ('': the whole server).")
@click.option("--metrics-url", default=None,
              help="Instead of gRPC: an HTTP URL that must answer 2xx (a worker's or trainer's /metrics).")
@click.option("--timeout", "timeout_s", default=3.0, show_default=True, help="Seconds to wait for the answer.")
@click.pass_context
def health(ctx: click.Context, target: str | None, service: str, metrics_url: str | None, timeout_s: float) -> None:
    """Exit 0 when the process answers healthy, 1 with the reason otherwise (container health checks). gRPC:
    the grpc.health.v1 Check of the API, over the TLS and token settings every client uses (CARTWISE_TLS_CA_FILE,
    ...); the health service needs no token."""
    from cartwise.app.probes import ProbeFailed, check_grpc, check_http
    from grpc_api.security import SecurityConfigError

    settings = settings_of(ctx)
    try:
        if metrics_url:
            check_http(metrics_url, timeout_s)
        else:
            check_grpc(settings, target or f"{settings.grpc_host}:{settings.grpc_port}", service, timeout_s)
    except ProbeFailed as err:
        raise click.ClickException(f"unhealthy: {err}") from None
    except SecurityConfigError as err:
        raise click.UsageError(str(err)) from None
    click.echo("SERVING" if not metrics_url else "OK")
