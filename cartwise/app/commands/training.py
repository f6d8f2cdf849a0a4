"""Training the encoder: `cartwise train`, the `experiments` group (docs/training.md, hybrid.md,
second_stage.md) and `taxonomy assign` (the category trees of TB-HNS)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cartwise.app.commands.common import no_broker, report, settings_of
from cartwise.retrieval import RETRIEVALS
from cartwise.settings import Settings


@click.command()
@click.option("--dataset", type=click.Choice(["homedepot"]), default="homedepot", show_default=True)
@click.option("--negatives", type=click.Choice(["random", "inbatch", "bm25", "ance", "tbhns"]), default="tbhns",
              show_default=True)
@click.option("--steps", type=int, default=None, help="Optimizer steps (default: the CPU configuration's).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Any TrainConfig field, e.g. --set roar_weight=0 --set fn_margin=none (repeatable).")
@click.option("--from-kafka", is_flag=True, help="Continue the active version on behavior events from Kafka.")
@click.option("--since", default=None, help="With --from-kafka: a watermark JSON or ISO time (default: the active version's).")
@click.option("--resume", is_flag=True, help="Continue this configuration's checkpoint in the run directory.")
@click.option("--publish/--no-publish", default=True, show_default=True, help="Publish the result to the registry.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def train(ctx: click.Context, dataset: str, negatives: str, steps: int | None, overrides: tuple[str, ...],
          from_kafka: bool, since: str | None, resume: bool, publish: bool, as_json: bool) -> None:
    """Train the dual encoder (trainer/) and publish it as the next registry version."""
    from pydantic import ValidationError

    from trainer.config import TrainConfig

    fields = _parse_overrides(overrides) | {"negatives": negatives, "dataset": dataset}
    try:
        config = TrainConfig.model_validate({**fields, **({"steps": steps} if steps else {})})
    except ValidationError as err:
        raise click.BadParameter(str(err), param_hint="--set") from None
    settings = settings_of(ctx)
    if from_kafka:
        from kafka.errors import KafkaError

        from trainer.incremental import NothingToTrain, train_from_kafka

        try:
            outcome = train_from_kafka(settings, config, since, publish=publish)
        except NothingToTrain as err:
            raise click.ClickException(str(err)) from None
        except KafkaError as err:
            raise click.ClickException(no_broker(settings, err)) from None
    else:
        from trainer.driver import train_homedepot

        outcome = train_homedepot(settings, config, resume=resume, publish=publish)
    report(outcome.summary(), as_json)


@click.group()
def experiments() -> None:
    """Reproducible training experiments (docs/training.md)."""


@experiments.command("ablation")
@click.option("--arm", "arms", multiple=True, help="Run only these arms (default: all).")
@click.option("--steps", type=int, default=None)
@click.option("--docs", type=click.Path(file_okay=False, path_type=Path), default=Path("docs"), show_default=True)
@click.pass_context
def experiments_ablation(ctx: click.Context, arms: tuple[str, ...], steps: int | None, docs: Path) -> None:
    """Pretrained -> random -> in-batch -> BM25 -> ANCE -> TB-HNS -> + mask -> + ROAR on Home Depot val.

    Results accumulate in DATA_DIR/experiments/ablation.json; finished arms are skipped, an interrupted
    one resumes from its checkpoint."""
    from trainer.experiments import run_ablation
    from trainer.report import write_training_report

    settings = settings_of(ctx)
    run_ablation(settings, settings.data_dir / "experiments" / "ablation.json", list(arms) or None, steps)
    click.echo(write_training_report(settings.data_dir / "experiments", docs))


@experiments.command("report")
@click.option("--docs", type=click.Path(file_okay=False, path_type=Path), default=Path("docs"), show_default=True)
@click.pass_context
def experiments_report(ctx: click.Context, docs: Path) -> None:
    """Rewrite docs/training.md from the saved experiment results."""
    from trainer.report import write_training_report

    click.echo(write_training_report(settings_of(ctx).data_dir / "experiments", docs))


MODEL_HELP = "Encoder: pretrained, latest (the newest trained version) or vN."
MODEL_OPTION = click.option("--model", default="pretrained", show_default=True, help=MODEL_HELP)
DOCS_OPTION = click.option("--docs", type=click.Path(file_okay=False, path_type=Path), default=Path("docs"),
                           show_default=True)


@experiments.command("hybrid")
@MODEL_OPTION
@DOCS_OPTION
@click.pass_context
def experiments_hybrid(ctx: click.Context, model: str, docs: Path) -> None:
    """Choose BM25's k1/b and the fusion weight on half the Home Depot validation queries, confirm on the
    other half -> docs/hybrid.md (and DATA_DIR/experiments/hybrid.json)."""
    from trainer.hybrid_tuning import tune_hybrid, write_hybrid_report

    settings = settings_of(ctx)
    results = _save_experiment(settings, "hybrid", tune_hybrid(settings, _model_version(settings, model)))
    click.echo(write_hybrid_report(results, docs))
    click.echo(json.dumps(results["chosen"], indent=2))


@experiments.command("second-stage")
@MODEL_OPTION
@DOCS_OPTION
@click.pass_context
def experiments_second_stage(ctx: click.Context, model: str, docs: Path) -> None:
    """LightGBM LambdaRank over the hybrid top 100, trained on the train split, against the fusion on
    validation -> docs/second_stage.md (and DATA_DIR/experiments/second_stage.json)."""
    from trainer.second_stage import run_second_stage, write_second_stage_report

    settings = settings_of(ctx)
    results = _save_experiment(settings, "second_stage", run_second_stage(settings, _model_version(settings, model)))
    click.echo(write_second_stage_report(results, docs))
    click.echo(json.dumps({k: results[k]["all"] for k in ("fused", "reranked")}, indent=2))


@experiments.command("personalization")
@click.option("--model", default="latest", show_default=True, help=MODEL_HELP)
@click.option("--retrieval", type=click.Choice(RETRIEVALS), default="hybrid", show_default=True)
@click.pass_context
def experiments_personalization(ctx: click.Context, model: str, retrieval: str) -> None:
    """Tune α_max, n₀ and the half-life on REES46 (half the users), report on the other half."""
    from trainer.personalization import tune

    settings = settings_of(ctx)
    result = _save_experiment(settings, "personalization",
                              tune(settings, _model_version(settings, model), retrieval=retrieval))
    click.echo(json.dumps({"chosen": result["chosen"], "held_out": result["report"]}, indent=2))


@experiments.command("distill")
@MODEL_OPTION
@click.option("--layers", type=int, default=3, show_default=True, help="Transformer layers of the student query tower.")
@click.option("--steps", type=int, default=None, help="Optimizer steps (default: the CPU configuration's).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Any trainer.distill.DistillConfig field (repeatable), e.g. --set contrastive_weight=0.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def experiments_distill(ctx: click.Context, model: str, layers: int, steps: int | None, overrides: tuple[str, ...],
                        as_json: bool) -> None:
    """Distill MODEL's int8 served copy into a LAYERS-layer query tower (products keep their embeddings) and
    compare served hybrid validation nDCG@10 / Recall@100 and query CPU ms on one thread
    (DATA_DIR/experiments/distill-L<layers>.json; docs/training.md, "Distilled query tower")."""
    import torch
    from pydantic import ValidationError

    from trainer.distill import DistillConfig
    from trainer.distill_experiment import run_distill

    torch.set_num_threads(1)  # the experiment shares two cores with the service and other work
    settings = settings_of(ctx)
    try:
        config = DistillConfig.model_validate({**_parse_overrides(overrides), "layers": layers,
                                               **({"steps": steps} if steps else {})})
    except ValidationError as err:
        raise click.BadParameter(str(err), param_hint="--set") from None
    result = run_distill(settings, _model_version(settings, model), config)
    report(_save_experiment(settings, f"distill-L{layers}", result), as_json)


def _parse_overrides(overrides: tuple[str, ...]) -> dict[str, str | None]:
    """``--set KEY=VALUE`` options as a dict for a pydantic config ("none"/"null": None)."""
    return {k: None if v.lower() in ("none", "null") else v for k, v in (o.split("=", 1) for o in overrides)}


def _model_version(settings: Settings, model: str) -> str:
    """The registry version a --model name means (pretrained, latest or vN); raises RegistryError."""
    from cartwise.registry import ModelRegistry
    from trainer.evaluation.run import resolve_model

    return resolve_model(ModelRegistry(settings.models_dir), model)


def _save_experiment(settings: Settings, name: str, results: dict) -> dict:
    """Write ``results`` to DATA_DIR/experiments/NAME.json (what `experiments report` reads) and return them."""
    out = settings.data_dir / "experiments" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    return results


@click.group()
def taxonomy() -> None:
    """Category trees for taxonomy-based hard negatives."""


@taxonomy.command("assign")
@click.option("--dataset", type=click.Choice(["homedepot"]), default="homedepot", show_default=True)
@click.option("--min-score", default=0.3, show_default=True, help="Leave a product unassigned below this cosine.")
@click.option("--sample", default=0, show_default=True, help="Also print this many random assignments (seed 0).")
@click.pass_context
def taxonomy_assign(ctx: click.Context, dataset: str, min_score: float, sample: int) -> None:
    """Map every product of DATASET onto the Google Product Taxonomy (method: trainer/taxonomy/assign.py)."""
    import random

    from cartwise.registry import ModelRegistry
    from trainer.taxonomy.assign import (
        assign_homedepot,
        assignment_path,
        write_assignments,
    )

    settings = settings_of(ctx)
    assignments = assign_homedepot(ModelRegistry(settings.models_dir), settings.data_dir / "eval_cache", min_score)
    out = assignment_path(settings.data_dir, dataset)
    write_assignments(assignments, out)
    covered = sum(a.category_id is not None for a in assignments)
    click.echo(f"{out}: {covered}/{len(assignments)} products assigned ({covered / len(assignments):.1%})")
    for a in random.Random(0).sample(assignments, min(sample, len(assignments))):
        click.echo(f"{a.product_id}\t{a.score:.2f}\t{' > '.join(a.path) or '-'}")
