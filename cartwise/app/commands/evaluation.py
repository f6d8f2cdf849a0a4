"""Offline evaluation: `cartwise eval` (metrics against judgments or held-out events) and `cartwise eval-report`
(docs/eval.md)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cartwise.app.commands.common import console, report, settings_of
from cartwise.retrieval import RETRIEVALS


@click.command("eval")
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

    settings = settings_of(ctx)
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
        report({k: v for k, v in metrics.items() if k != "recall_curve"} | {"model": name}, False)


@click.command("eval-report")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("docs"), show_default=True)
@click.pass_context
def eval_report(ctx: click.Context, out: Path) -> None:
    """Regenerate docs/eval.md and its plots from fresh evaluations of BM25 and the pretrained encoder."""
    from trainer.evaluation.report import write_report

    console.print(f"wrote {write_report(settings_of(ctx), out)}")
