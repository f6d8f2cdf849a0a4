"""docs/training.md: the ablation table, convergence plots and the commands that reproduce them."""

from __future__ import annotations

import json
import time
from pathlib import Path

from trainer.distill_experiment import distill_section
from trainer.evaluation.report import markdown_table
from trainer.experiments import ARMS
from trainer.plots import plot_convergence

CONVERGENCE_ARMS = ("tb-hns", "random", "ance")
FINDINGS_OPEN, FINDINGS_CLOSE = "<!-- findings: written by hand, kept by the generator -->", "<!-- /findings -->"
FINDINGS = f"{FINDINGS_OPEN}\n{FINDINGS_CLOSE}"
METRICS = ("recall@10", "recall@100", "ndcg@10", "mrr@10")


def ablation_rows(results: dict) -> list[list]:
    """One row per model: metrics on the validation split, nDCG@10 margin over BM25, best step, seconds."""
    bm25 = results["baselines"]["bm25"]["ndcg@10"]
    labels = {"bm25": "BM25 retrieval (stemmed)", "pretrained": "pretrained encoder (no training)"}
    rows = [[labels.get(name, name), *(m[k] for k in METRICS), f"{m['ndcg@10'] - bm25:+.4f}", _dense(m), "-", "-"]
            for name, m in results["baselines"].items()]
    for name in ARMS:
        arm = results.get("arms", {}).get(name)
        if arm:
            seconds = arm["history"][-1]["train_seconds"]
            rows.append([f"trained: {name}", *(arm["val"][k] for k in METRICS), f"{arm['val']['ndcg@10'] - bm25:+.4f}",
                         _dense(arm["val"]), f"{arm['best_step']}/{arm['steps_run']}", f"{seconds:.0f}"])
    return rows


def _dense(metrics: dict) -> str:
    """The dense ranking's nDCG@10 / Recall@100 next to a hybrid row ("-" for BM25 alone)."""
    dense = metrics.get("dense")
    return f"{dense['ndcg@10']:.4f} / {dense['recall@100']:.4f}" if dense else "-"


def steps_to_target(results: dict, arms: tuple[str, ...] = ("tb-hns", "random")) -> tuple[float, dict]:
    """The highest in-training nDCG@10 every arm in ``arms`` reaches, and the first (step, seconds) each
    reaches it at: how much sooner one negative type gets to the same quality."""
    histories = {a: results["arms"][a]["history"] for a in arms if a in results.get("arms", {})}
    if not histories:
        return float("nan"), {}
    target = min(max(p["metrics"]["ndcg@10"] for p in h) for h in histories.values())
    first = {a: next((p["step"], p["train_seconds"]) for p in h if p["metrics"]["ndcg@10"] >= target)
             for a, h in histories.items()}
    return target, first


def personalization_section(tuned: dict | None) -> str:
    """Markdown for the REES46 tuning results of trainer.personalization (empty when not run)."""
    if not tuned:
        return ""
    top = sorted(tuned["grid"], key=lambda r: (-r["personalized_hit@10"], -r["personalized_mrr@10"]))[:5]
    rows = [[r["alpha_max"], r["n0"], f"{r['half_life_s'] / 3600:g} h", r["personalized_hit@10"],
             r["personalized_mrr@10"]] for r in top]
    held = tuned["report"]
    report = [[name, f"{p['alpha_max']}, {p['n0']}, {p['half_life_s'] / 3600:g} h", held[name]["hit@10"],
               held[name]["personalized_hit@10"], held[name]["personalized_mrr@10"],
               held[name].get("novel_personalized_hit@10", "-"), held[name]["targets"]]
              for name, p in (("default", tuned["default"]), ("chosen", tuned["chosen"]))]
    kept = held["chosen"]["personalized_hit@10"] <= held["default"]["personalized_hit@10"]
    verdict = ("The choice does not beat the defaults on the held-out users, so the defaults stay."
               if kept else "The choice beats the defaults on the held-out users.")
    return f"""## Personalization parameters (REES46, encoder {tuned['version']}, {tuned.get('retrieval', 'dense')} ranking)
Grid over α_max × n₀ × half-life ({len(tuned['grid'])} settings) with the REES46 protocol of docs/eval.md,
on half of the users (stable hash); the best five on those users:

{markdown_table(["α_max", "n₀", "half-life", "HitRate@10", "MRR@10"], rows)}

The choice against the defaults on the other half of the users (never used to choose):

{markdown_table(["setting", "α_max, n₀, H", "HitRate@10 (no personalization)", "HitRate@10", "MRR@10",
                 "novel-target HitRate@10", "targets"], report)}

{verdict}

Caveat: the protocol rewards re-finding a product the user has just viewed (almost every REES46 cart
follows a view of the same product), so it pushes α up and the half-life down; it does not measure
what a large α costs a query whose intent differs from the history.

"""


def write_training_report(experiments: Path, docs: Path) -> Path:
    """Write ``docs/training.md`` (and docs/img/training_convergence.png) from the ablation results
    (``experiments/ablation.json``) and, when present, the personalization tuning and query-tower
    distillation results."""
    from cartwise.machine import machine_info

    results = json.loads((experiments / "ablation.json").read_text())
    tuned_path = experiments / "personalization.json"
    personalization = personalization_section(json.loads(tuned_path.read_text()) if tuned_path.exists() else None)
    distilled = distill_section([json.loads(f.read_text())
                                 for f in sorted(experiments.glob("distill-L*.json"), reverse=True)])

    plot_convergence(results, CONVERGENCE_ARMS, docs / "img" / "training_convergence.png")
    target, first = steps_to_target(results)
    machine = machine_info()
    header = ["model", "Recall@10", "Recall@100", "nDCG@10", "MRR@10", "nDCG@10 vs BM25",
              "dense alone: nDCG@10 / Recall@100", "best/run steps", "train s"]
    reach = "\n".join(f"- {arm}: step {step} ({seconds:.0f} s)" for arm, (step, seconds) in first.items())
    text = f"""# Training: ablation and convergence (Home Depot)

Generated by `cartwise experiments ablation` on {time.strftime('%Y-%m-%d')}, machine: {machine['cpu']},
{machine['cores']} cores, no GPU (the CPU configuration; no GPU machine was lent to this session).

## Protocol
- Queries split by a hash of the query text: {_split_line(results)}. Nothing is trained on validation
  queries; the held-back evaluation queries are not in our files at all.
- Every arm starts from the pretrained all-MiniLM-L6-v2, same seed and budget (TrainConfig defaults:
  batch 32 queries, 3 mined negatives per query, 250 steps, AdamW lr 1e-4, top 2 of 6 layers +
  a 384-d projection head (identity at start) trained, lower layers frozen with their states cached).
- Every model row is the **served hybrid ranking**, (1 − w)·⟨q̂, p̂⟩ + w·κ·BM25 with the served w and κ
  (docs/hybrid.md), scored on **all validation queries over the whole 54,667-product catalog** with
  exact search (the index's HNSW and candidate lists play no part here; `cartwise eval --model vN`
  measures the ONNX export through Qdrant Edge as served). The encoder alone ("dense alone") is scored
  from the same vectors. The BM25 row is bm25s's stemmed BM25, the reference baseline.
- Early stopping and the "best step" use a cheaper in-training validation of the same hybrid ranking:
  300 random validation queries against their judged products plus 5,000 random other products.

## Ablation (validation split)
{markdown_table(header, ablation_rows(results))}

{FINDINGS}

## Convergence
![convergence](img/training_convergence.png)

In-training nDCG@10 (sampled corpus, so higher than the full-catalog figures above) every 50 steps.
Training seconds include negative mining: ANCE re-ranks every train query against the whole
catalog with the current model every 125 steps{_ance_share(results)}. The arms ran while other jobs
shared the two cores at times, so seconds are inflated unevenly between arms: compare them within
one arm, and across arms by steps.
Steps and seconds to reach nDCG@10 {target:.4f} (the best value both TB-HNS and random reach):
{reach}

{personalization}
{distilled}
## Reproduce
```bash
cartwise taxonomy assign --dataset homedepot          # TB-HNS needs the assigned taxonomy
cartwise experiments ablation                         # all arms, resumable; rewrites this file
cartwise experiments personalization --model latest   # REES46 tuning (then rerun `experiments report`)
cartwise experiments distill --layers 3               # the distilled query tower (then `experiments report`)
cartwise experiments report                           # this file from the saved results
cartwise train --dataset homedepot --negatives tbhns  # the published configuration alone
cartwise eval --dataset homedepot --model bm25 --model pretrained --model latest
```
"""
    docs.mkdir(parents=True, exist_ok=True)
    path = docs / "training.md"
    path.write_text(text.replace(FINDINGS, kept_findings(path)))
    return path


def kept_findings(path: Path) -> str:
    """The hand-written findings block of an existing report, kept across regenerations."""
    old = path.read_text() if path.exists() else ""
    start, end = old.find(FINDINGS_OPEN), old.find(FINDINGS_CLOSE)
    return old[start:end + len(FINDINGS_CLOSE)] if 0 <= start < end else FINDINGS


def _ance_share(results: dict) -> str:
    arm = results.get("arms", {}).get("ance")
    if not arm:
        return ""
    last = arm["history"][-1]
    return f" ({last['mining_seconds']:.0f} s of its {last['train_seconds']:.0f} s)"


def _split_line(results: dict) -> str:
    return f"80 % train / 20 % validation ({results['baselines']['bm25']['queries']} validation queries)"

