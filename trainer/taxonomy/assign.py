"""Assigning a catalog without a taxonomy (Home Depot) onto the Google Product Taxonomy.

Method (documented with its measured accuracy in docs/taxonomy.md):
1. embed every Google category twice with the pretrained encoder, as its leaf name and as its full
   path, and average the two (the leaf carries the specific meaning, the path keeps it in the right
   department: "Ladders" alone matches "Boat Ladders");
2. embed every product title with the same encoder and take the most similar category;
3. keep only departments (top-level categories) that receive at least ``min_department_share`` of the
   first-pass assignments, then assign again: a home-improvement catalog has no "Mature > Weapons";
4. a product whose best similarity is below ``min_score`` stays unassigned (no taxonomy negatives).
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cartwise.datasets import data_root
from trainer.taxonomy.tree import split_path

GOOGLE_SEPARATOR = ">"


@dataclass(frozen=True)
class GoogleTaxonomy:
    """Google Product Taxonomy categories: ids (C,) and paths (C lists of names)."""

    ids: list[int]
    paths: list[list[str]]

    @classmethod
    def load(cls, path: Path | None = None) -> "GoogleTaxonomy":
        """Read the official ``<id> - A > B > C`` file (comment lines start with #)."""
        path = path or data_root() / "google_product_taxonomy" / "taxonomy-with-ids.en-US.txt"
        ids, paths = [], []
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("#") or not line.strip():
                continue
            number, raw = line.split(" - ", 1)
            ids.append(int(number))
            paths.append(split_path(raw, GOOGLE_SEPARATOR))
        return cls(ids, paths)


@dataclass(frozen=True)
class Assignment:
    """One product's category: Google id (None when unassigned), path and cosine similarity."""

    product_id: str
    category_id: int | None
    path: list[str]
    score: float


def category_vectors(taxonomy: GoogleTaxonomy, embed_texts) -> np.ndarray:
    """(C, D) float32: mean of the leaf-name and full-path embeddings of each category.

    ``embed_texts`` maps a list of texts to (N, D) unit vectors."""
    leaves = embed_texts([p[-1] for p in taxonomy.paths])
    full = embed_texts([f" {GOOGLE_SEPARATOR} ".join(p) for p in taxonomy.paths])
    return (leaves + full) / 2.0


def _best(products: np.ndarray, categories: np.ndarray, allowed: np.ndarray, chunk: int = 4096):
    best, score = np.zeros(len(products), np.int64), np.zeros(len(products), np.float32)
    masked = np.where(allowed, 0.0, -np.inf).astype(np.float32)
    for start in range(0, len(products), chunk):
        sims = products[start:start + chunk] @ categories.T + masked
        best[start:start + chunk] = sims.argmax(axis=1)
        score[start:start + chunk] = sims.max(axis=1)
    return best, score


def assign(product_ids: list[str], product_vectors: np.ndarray, taxonomy: GoogleTaxonomy,
           categories: np.ndarray, min_score: float = 0.3, min_department_share: float = 0.02) -> list[Assignment]:
    """Assign products ((N, D) unit vectors) to categories ((C, D)), per the module's method."""
    departments = [p[0] for p in taxonomy.paths]
    first, _ = _best(product_vectors, categories, np.ones(len(departments), bool))
    share = Counter(departments[j] for j in first)
    allowed = np.array([share[d] / len(product_ids) >= min_department_share for d in departments])
    best, score = _best(product_vectors, categories, allowed)
    return [Assignment(pid, taxonomy.ids[j] if s >= min_score else None,
                       taxonomy.paths[j] if s >= min_score else [], float(s))
            for pid, j, s in zip(product_ids, best, score)]


def write_assignments(assignments: list[Assignment], path: Path) -> None:
    """Write ``product_id,category_id,score,path`` CSV (path joined with " > "; blank when unassigned)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["product_id", "category_id", "score", "path"])
        for a in assignments:
            writer.writerow([a.product_id, a.category_id or "", f"{a.score:.4f}",
                             f" {GOOGLE_SEPARATOR} ".join(a.path)])


def read_assignments(path: Path) -> dict[str, list[str]]:
    """product id -> assigned category path (unassigned products are left out).

    Raises FileNotFoundError with the command that creates the file."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `cartwise taxonomy assign --dataset homedepot` first")
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["product_id"]: split_path(row["path"], GOOGLE_SEPARATOR)
                for row in csv.DictReader(fh) if row["path"]}


def assignment_path(data_dir: Path, dataset: str = "homedepot") -> Path:
    """Where ``cartwise taxonomy assign`` writes a dataset's assignments."""
    return data_dir / "taxonomy" / f"{dataset}.csv"


def assign_homedepot(registry, cache_dir: Path, min_score: float = 0.3) -> list[Assignment]:
    """Assign every Home Depot product with the pretrained encoder of ``registry`` (exported if absent)."""
    from encoders.runtime import OnnxEncoder
    from trainer.evaluation.homedepot import (
        cached_catalog_vectors,
        catalog_texts,
        embed,
        load_homedepot,
    )
    from trainer.evaluation.run import PRETRAINED, resolve_model

    version = resolve_model(registry, PRETRAINED)
    ids, texts = catalog_texts(load_homedepot())
    products = cached_catalog_vectors(registry, version, texts, cache_dir)
    encoder = OnnxEncoder(registry.path(version), registry.manifest(version).max_tokens, threads=2)
    taxonomy = GoogleTaxonomy.load()
    categories = category_vectors(taxonomy, lambda batch: embed(encoder, batch, "embedding categories"))
    return assign(ids, products, taxonomy, categories, min_score=min_score)
