"""The ``cartwise`` command line: serve, replay, search, status, users, repair, demo, eval, train, models, bench,
health (container probes), settings-reference (docs/deploy.md)."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from cartwise.datasets import DATASETS
from cartwise.retrieval import RETRIEVALS
from cartwise.settings import Settings

console = Console()
# benchmarks' progress lines go to stderr, so that `--json` leaves stdout one JSON document
progress = Console(stderr=True)


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj["settings"]


@click.group()
@click.option("--log-level", default="WARNING", show_default=True, help="Python logging level.")
@click.pass_context
def main(ctx: click.Context, log_level: str) -> None:
    """Cartwise: streaming, personalized semantic product search. Settings come from CARTWISE_* variables."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kafka-python warns about its own selector's slow turns; the producer's real errors are raised.
    logging.getLogger("kafka").setLevel(max(logging.ERROR, logging.getLogger().level))
    ctx.obj = {"settings": Settings()}


@main.command()
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
            service = Service(_settings(ctx), role)
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


@main.command()
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

    settings = _settings(ctx)
    if bootstrap:
        settings = settings.model_copy(update={"kafka_bootstrap": bootstrap})
    with Progress(console=console) as progress:
        task = progress.add_task(f"replaying {dataset}", total=None)
        sent = run_replay(records(dataset), make_producer(settings), settings.topics, speed,
                          progress=lambda: progress.advance(task))
    console.print(f"published {sent} events to {settings.bootstrap}")


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


@main.command()
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
        with Client(target, _settings(ctx)) as client:
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


@main.command()
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

    settings = _settings(ctx)
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


@main.group()
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

    settings = _settings(ctx)
    try:
        request = request_forget(settings, user_id)
    except ValidationError as err:
        raise click.ClickException(f"user_id: {err.errors()[0]['msg']}") from None
    except KafkaError as err:
        raise click.ClickException(_no_broker(settings, err)) from None
    click.echo(f"erasure of {user_id!r} requested on {settings.topics.user_control} ({request.event_id})")


@main.command()
@click.pass_context
def repair(ctx: click.Context) -> None:
    """Ask the running service to rebuild the active version's collections from Kafka (the catalog topic and
    the user-history changelog), in place while it serves; `cartwise status` shows it running."""
    from kafka.errors import KafkaError

    from cartwise.lifecycle import request_repair
    from cartwise.registry import ModelRegistry

    settings = _settings(ctx)
    active = ModelRegistry(settings.models_dir).active()
    if active is None:
        raise click.ClickException(f"no active model under {settings.models_dir}: nothing to repair")
    try:
        request_repair(settings, active)
    except KafkaError as err:
        raise click.ClickException(_no_broker(settings, err)) from None
    click.echo(f"repair of {active} requested on {settings.topics.models_updates}")


@main.command()
@click.option("--keep-serving", is_flag=True, help="Keep the demo's service up after the story, until Ctrl-C.")
@click.option("--products", "homedepot_products", default=5_000, show_default=True,
              help="Home Depot products to index at most (those judged for validation queries, in file order).")
@click.option("--carts", default=8, show_default=True, help="REES46 carts held back and sent live.")
@click.pass_context
def demo(ctx: click.Context, keep_serving: bool, homedepot_products: int, carts: int) -> None:
    """The story on real data: Home Depot search (BM25, semantic, hybrid, scored against human judgments), then
    live personalization on REES46 (a user's results before and after a cart event, timed)."""
    from cartwise.app.demo import run_demo

    asyncio.run(run_demo(_settings(ctx), console, homedepot_products, carts, keep_serving))


@main.command("eval")
@click.option("--dataset", type=click.Choice(["homedepot", "rees46"]), required=True)
@click.option("--judgments", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Home Depot judgments CSV (id,product_uid,search_term,relevance); default: the shared one.")
@click.option("--products", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Home Depot products CSV (product_uid,product_title); default: the shared one.")
@click.option("--events", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="REES46 events CSV; default: the shared one.")
@click.option("--model", "models", multiple=True,
              help="bm25, pretrained, latest (the newest trained version) or vN (repeatable).")
@click.option("--split", type=click.Choice(["val", "train", "all"]), default=None,
              help="Home Depot queries: the validation split (never trained on), the train split, or all. "
                   "Default: val for the shared judgments, all for a --judgments file of your own.")
@click.option("--retrieval", type=click.Choice(RETRIEVALS), default="hybrid", show_default=True,
              help="Rank as the API does with this retrieval (bm25 ignores it).")
@click.option("--keep-duplicates", is_flag=True,
              help="Home Depot: rank every product, not one per identical text (the API's keep_duplicates).")
@click.option("--json", "as_json", is_flag=True, help="Print {model: metrics} as JSON.")
@click.pass_context
def evaluate(ctx: click.Context, dataset: str, judgments: Path | None, products: Path | None, events: Path | None,
             models: tuple[str, ...], split: str | None, retrieval: str, keep_duplicates: bool,
             as_json: bool) -> None:
    """Offline evaluation: Recall@10/100, nDCG@10, MRR@10 (homedepot); personalized HitRate@10 (rees46)."""
    from trainer.evaluation.run import eval_homedepot, eval_rees46

    settings = _settings(ctx)
    if dataset == "homedepot":
        results = eval_homedepot(settings, list(models or ("bm25", "pretrained")), judgments, split, products,
                                 retrieval, collapse=not keep_duplicates)
    else:
        results = eval_rees46(settings, list(models or ("bm25", "pretrained")), events, retrieval)
    if as_json:
        click.echo(json.dumps({m: {k: v for k, v in r.items() if k != "recall_curve"} for m, r in results.items()},
                              indent=2))
        return
    for name, metrics in results.items():
        _report({k: v for k, v in metrics.items() if k != "recall_curve"} | {"model": name}, False)


@main.command("eval-report")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("docs"), show_default=True)
@click.pass_context
def eval_report(ctx: click.Context, out: Path) -> None:
    """Regenerate docs/eval.md and its plots from fresh evaluations of BM25 and the pretrained encoder."""
    from trainer.evaluation.report import write_report

    console.print(f"wrote {write_report(_settings(ctx), out)}")


@main.command()
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

    fields = {k: None if v.lower() in ("none", "null") else v for k, v in (o.split("=", 1) for o in overrides)}
    fields |= {"negatives": negatives, "dataset": dataset}
    try:
        config = TrainConfig.model_validate({**fields, **({"steps": steps} if steps else {})})
    except ValidationError as err:
        raise click.BadParameter(str(err), param_hint="--set") from None
    settings = _settings(ctx)
    if from_kafka:
        from kafka.errors import KafkaError

        from trainer.incremental import NothingToTrain, train_from_kafka

        try:
            outcome = train_from_kafka(settings, config, since, publish=publish)
        except NothingToTrain as err:
            raise click.ClickException(str(err)) from None
        except KafkaError as err:
            raise click.ClickException(_no_broker(settings, err)) from None
    else:
        from trainer.driver import train_homedepot

        outcome = train_homedepot(settings, config, resume=resume, publish=publish)
    _report(outcome.summary(), as_json)


@main.group()
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

    settings = _settings(ctx)
    run_ablation(settings, settings.data_dir / "experiments" / "ablation.json", list(arms) or None, steps)
    click.echo(write_training_report(settings.data_dir / "experiments", docs))


@experiments.command("report")
@click.option("--docs", type=click.Path(file_okay=False, path_type=Path), default=Path("docs"), show_default=True)
@click.pass_context
def experiments_report(ctx: click.Context, docs: Path) -> None:
    """Rewrite docs/training.md from the saved experiment results."""
    from trainer.report import write_training_report

    click.echo(write_training_report(_settings(ctx).data_dir / "experiments", docs))


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

    settings = _settings(ctx)
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

    settings = _settings(ctx)
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

    settings = _settings(ctx)
    result = _save_experiment(settings, "personalization",
                              tune(settings, _model_version(settings, model), retrieval=retrieval))
    click.echo(json.dumps({"chosen": result["chosen"], "held_out": result["report"]}, indent=2))


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


@main.group()
def models() -> None:
    """The model registry: candidate, active and retired encoder versions."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def models_list(ctx: click.Context, as_json: bool) -> None:
    """Every version with its state, when it was made, from what, and its validation nDCG@10."""
    from cartwise.registry import ModelRegistry

    registry = ModelRegistry(_settings(ctx).models_dir)
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

    settings = _settings(ctx)
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

    settings = _settings(ctx)
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
        raise click.ClickException(_no_broker(settings, err)) from None
    click.echo(f"swap to {version} requested on {settings.topics.models_updates}; "
               "`cartwise models list` shows it active once the backfill is done")


@models.command("gc")
@click.option("--keep-retired", default=1, show_default=True, help="Retired versions kept for rollback.")
@click.pass_context
def models_gc(ctx: click.Context, keep_retired: int) -> None:
    """Delete old retired versions (never the active one or candidates)."""
    from cartwise.registry import ModelRegistry

    removed = ModelRegistry(_settings(ctx).models_dir).collect_garbage(keep_retired)
    click.echo(f"removed: {', '.join(removed) or 'nothing'}")


@models.command("ensure-active")
@click.pass_context
def models_ensure_active(ctx: click.Context) -> None:
    """Print the active version; in a registry with none, first activate the pretrained encoder (as the first
    `serve` does). Run once before several processes share a new registry (compose's init service), so that
    they do not each publish one."""
    from cartwise.app.service import ensure_active_model
    from cartwise.registry import ModelRegistry

    settings = _settings(ctx)
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
        manifest = publish_quantized(ModelRegistry(_settings(ctx).models_dir), version)
    except RegistryError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"{manifest.version}: int8 copy of {version}")


@main.group("trainer")
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

    settings = _settings(ctx)
    try:
        result = run_cycle(settings, TrainConfig(**({"steps": steps} if steps else {})), margin)
    except CycleBusy as err:
        raise click.ClickException(str(err)) from None
    except KafkaError as err:
        raise click.ClickException(_no_broker(settings, err)) from None
    _report({k: v for k, v in asdict(result).items() if v is not None}, as_json)


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
    run_every(_settings(ctx), TrainConfig(), period, margin)


@main.group()
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

    settings = _settings(ctx)
    assignments = assign_homedepot(ModelRegistry(settings.models_dir), settings.data_dir / "eval_cache", min_score)
    out = assignment_path(settings.data_dir, dataset)
    write_assignments(assignments, out)
    covered = sum(a.category_id is not None for a in assignments)
    click.echo(f"{out}: {covered}/{len(assignments)} products assigned ({covered / len(assignments):.1%})")
    for a in random.Random(0).sample(assignments, min(sample, len(assignments))):
        click.echo(f"{a.product_id}\t{a.score:.2f}\t{' > '.join(a.path) or '-'}")


@main.group()
def bench() -> None:
    """Benchmarks (print figures; see docs/benchmarks.md)."""


@bench.command("search")
@click.option("--qps", type=float, default=None, help="Offered Search/s.  [default: 200; not with --overload]")
@click.option("--seconds", default=20.0, show_default=True, help="Length of the load (with --overload: of each phase).")
@click.option("--retrieval", type=click.Choice(RETRIEVALS), default="hybrid", show_default=True)
@click.option("--catalog", type=click.Choice(["rees46", "homedepot"]), default="rees46", show_default=True,
              help="REES46 (5,541 products, its own users) or Home Depot (54,667 products, synthetic histories).")
@click.option("--overload", is_flag=True,
              help="Measure the capacity (closed loop), then offer 2x it open-loop: served p99, rejection rate.")
@click.option("--deadline-ms", default=250.0, show_default=True, help="gRPC deadline per request with --overload.")
@click.option("--repeat-rate", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="With --catalog homedepot: the share of requests that repeat an earlier query (an assumption: "
                   "no query log exists here). CARTWISE_QUERY_CACHE_SIZE=0 measures without the query cache.")
@click.option("--merchandise", is_flag=True,
              help="Every request sorts by price, boosts in-stock products and counts facets (its candidate set).")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the latency histogram (PNG), e.g. docs/img/search_latency_homedepot.png.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def bench_search(ctx: click.Context, qps: float | None, seconds: float, retrieval: str, catalog: str,
                 overload: bool, deadline_ms: float, repeat_rate: float, merchandise: bool, plot: Path | None,
                 as_json: bool) -> None:
    """gRPC Search p50/p99 and QPS at a fixed offered load, next to the floor: query encode + the served
    hybrid engine query alone. With --overload: what Search serves and refuses at twice its capacity."""
    from cartwise.app.bench.search import run_overload_bench, run_search_bench

    if overload and qps is not None:
        raise click.UsageError("--overload chooses its own load (2x the measured capacity); drop --qps")
    if overload and catalog != "rees46":
        raise click.UsageError("--overload runs on the REES46 catalog; drop --catalog")
    if overload and (merchandise or plot):
        raise click.UsageError("--merchandise and --plot measure a fixed load; drop --overload")
    if overload:
        _report(asyncio.run(run_overload_bench(_settings(ctx), seconds, progress, retrieval, deadline_ms)), as_json)
    else:
        _report(asyncio.run(run_search_bench(_settings(ctx), qps or 200.0, seconds, progress, retrieval, catalog,
                                             repeat_rate, merchandise, plot)), as_json)


@bench.command("freshness")
@click.option("--events", default=100, show_default=True, help="Probe events (half cart, half catalog).")
@click.option("--background-rate", default=1000.0, show_default=True, help="Background events/s.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def bench_freshness(ctx: click.Context, events: int, background_rate: float, as_json: bool) -> None:
    """Time from producing an event to it changing a Search answer, under background load."""
    from cartwise.app.bench.freshness import run_freshness_bench

    _report(asyncio.run(run_freshness_bench(_settings(ctx), events, background_rate, progress)), as_json)


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

    _report(asyncio.run(run_ingest_bench(_settings(ctx), events, broker_storage, progress, plot=plot)), as_json)


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

    _report(run_recovery_bench(_settings(ctx), kills, limit, seed, progress), as_json)


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

    _report(asyncio.run(run_soak_bench(_settings(ctx), rate, minutes, catalog_rate, qps, retention_s, plot,
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
        result = asyncio.run(run_swap_bench(_settings(ctx), version, qps, before_s, after_s, progress, plot, catalog))
    except RegistryError as err:
        raise click.ClickException(str(err)) from None
    _report(result, as_json)


@main.command()
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

    settings = _settings(ctx)
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


@main.command("settings-reference")
@click.option("--write", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Rewrite the section between the settings markers of this file (docs/deploy.md) instead of printing.")
def settings_reference(path: Path | None) -> None:
    """The CARTWISE_* settings reference (variable, type, default, description), generated from the Settings
    classes; secrets are shown unset."""
    from cartwise.app.settings_reference import render, update_file

    if path is None:
        click.echo(render())
        return
    try:
        changed = update_file(path)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"{path}: {'updated' if changed else 'up to date'}")


def _no_broker(settings: Settings, err: Exception) -> str:
    where = "set CARTWISE_KAFKA_BOOTSTRAP" if settings.embedded_broker else "check CARTWISE_KAFKA_BOOTSTRAP"
    return f"no Kafka broker at {settings.bootstrap} ({err!r}): start `cartwise serve` or {where}"


def _report(result: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    table = Table(show_header=False)
    for key, value in result.items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    console.print(table)


if __name__ == "__main__":
    main()
