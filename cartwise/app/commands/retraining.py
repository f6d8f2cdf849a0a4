"""`cartwise trainer`: scheduled retraining, events since the watermark -> train -> gate -> swap."""

from __future__ import annotations

import click

from cartwise.app.commands.common import no_broker, report, settings_of


@click.group("trainer")
def trainer_group() -> None:
    """Scheduled retraining: events since the watermark -> train -> gate -> swap."""


@trainer_group.command("cycle")
@click.option("--margin", default=0.01, show_default=True, help="Largest nDCG@10 loss vs the active version.")
@click.option("--steps", type=int, default=None, help="Optimizer steps (default: the CPU configuration's).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def trainer_cycle(ctx: click.Context, margin: float, steps: int | None, as_json: bool) -> None:
    """One cycle (for cron); exits 1 if another cycle is running or no broker answers."""
    from dataclasses import asdict

    from kafka.errors import KafkaError

    from trainer.config import TrainConfig
    from trainer.cycle import CycleBusy, run_cycle

    settings = settings_of(ctx)
    try:
        result = run_cycle(settings, TrainConfig(**({"steps": steps} if steps else {})), margin)
    except CycleBusy as err:
        raise click.ClickException(str(err)) from None
    except KafkaError as err:
        raise click.ClickException(no_broker(settings, err)) from None
    report({k: v for k, v in asdict(result).items() if v is not None}, as_json)


@trainer_group.command("run")
@click.option("--every", "every", required=True, help="Cycle period: 90s, 15m, 6h, 1d.")
@click.option("--margin", default=0.01, show_default=True)
@click.pass_context
def trainer_run(ctx: click.Context, every: str, margin: float) -> None:
    """Run a cycle every DURATION until interrupted; a failed cycle leaves the active version serving."""
    from trainer.config import TrainConfig
    from trainer.cycle import parse_duration, run_every

    try:
        period = parse_duration(every)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--every") from None
    run_every(settings_of(ctx), TrainConfig(), period, margin)
