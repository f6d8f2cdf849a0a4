"""The ``cartwise`` command line: the root group (global options, the settings) assembled from the command
groups of ``cartwise.app.commands``: serve, status, health, repair, users (service); replay, demo (data);
simulate; search; eval, eval-report (evaluation); train, experiments, taxonomy (training); models; trainer
(retraining); bench; settings-reference (reference, docs/deploy.md)."""

from __future__ import annotations

import logging

import click

from cartwise.app.commands import bench, data, evaluation, models, reference, retraining, search, service, training
from cartwise.app.commands.simulate import simulate
from cartwise.settings import Settings


@click.group()
@click.option("--log-level", default="WARNING", show_default=True, help="Python logging level.")
@click.pass_context
def main(ctx: click.Context, log_level: str) -> None:
    """Cartwise: streaming, personalized semantic product search. Settings come from CARTWISE_* variables."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kafka-python warns about its own selector's slow turns; the producer's real errors are raised.
    logging.getLogger("kafka").setLevel(max(logging.ERROR, logging.getLogger().level))
    ctx.obj = {"settings": Settings()}


for command in (
    service.serve, service.status, service.health, service.repair, service.users,
    data.replay, data.demo, simulate,
    search.search,
    evaluation.evaluate, evaluation.eval_report,
    training.train, training.experiments, training.taxonomy,
    models.models,
    retraining.trainer_group,
    bench.bench,
    reference.settings_reference,
):
    main.add_command(command)


if __name__ == "__main__":
    main()
