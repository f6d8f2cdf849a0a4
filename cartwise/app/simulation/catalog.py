"""The catalog a simulation runs on: the products to have indexed, the train-split queries with their
judgments, and each product's traits (brand, category) for the shoppers' tastes.

Home Depot products carry a title only. Their brand is the title's first word when that word begins at least
:data:`BRAND_MIN_PRODUCTS` titles (72% of products get one: Hampton, Everbilt, BEHR, KOHLER, ...). Their
category is the Google Product Taxonomy category (two levels) `cartwise taxonomy assign` wrote under the data
directory, when it did; without that file shoppers have brand tastes only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cartwise.app.simulation.queries import train_queries
from cartwise.app.simulation.shoppers import Traits, leading_brands
from cartwise.datasets import Record, homedepot_records
from trainer.evaluation.homedepot import load_homedepot
from trainer.taxonomy.assign import assignment_path, read_assignments

BRAND_MIN_PRODUCTS = 20
CATEGORY_LEVELS = 2
CATALOGS = ("homedepot",)


@dataclass(frozen=True)
class SimCatalog:
    """``records``: the catalog events to have indexed (product upserts); ``qrels``: train-split query ->
    {product id: grade 1..3}, every judged product among the records; ``traits``: product id -> Traits;
    ``categories``: whether the traits carry categories."""

    records: list[Record]
    qrels: dict[str, dict[str, float]]
    traits: dict[str, Traits]
    categories: bool

    @property
    def product_ids(self) -> list[str]:
        """The products' ids, in publishing order."""
        return [record.key for record in self.records]


def _subset(qrels: dict[str, dict[str, float]], titles: dict[str, str], max_products: int | None
            ) -> tuple[dict[str, dict[str, float]], set[str]]:
    """(qrels kept, products kept): every query and product when ``max_products`` is None; else queries in
    order while their judged products fit in ``max_products``, topped up with other products in file order."""
    if max_products is None:
        return qrels, set(titles)
    kept, products = {}, set()
    for query, judged in qrels.items():
        if len(products | judged.keys()) > max_products:
            break
        kept[query] = judged
        products |= judged.keys()
    for pid in titles:
        if len(products) >= max_products:
            break
        products.add(pid)
    return kept, products


def homedepot_catalog(data_dir: Path, max_products: int | None = None) -> SimCatalog:
    """The Home Depot simulation catalog: all 54,667 products (``max_products`` None) or at most
    ``max_products`` (the judged products of the first train queries, then others in file order), the
    train-split queries whose judged products are in it, and traits (module doc; categories from
    ``data_dir``'s taxonomy assignment when present). Raises ValueError for ``max_products`` < 1."""
    if max_products is not None and max_products < 1:
        raise ValueError(f"max_products must be at least 1, got {max_products}")
    data = load_homedepot()
    train = {query: data.qrels[query] for query in train_queries(data.qrels)}
    qrels, products = _subset(train, data.titles, max_products)
    brands = leading_brands(data.titles.values(), BRAND_MIN_PRODUCTS)
    path = assignment_path(data_dir, "homedepot")
    paths = read_assignments(path) if path.exists() else {}
    traits = {}
    for pid in products:
        words = data.titles[pid].split()
        category = paths.get(pid, [])[:CATEGORY_LEVELS]
        traits[pid] = Traits(words[0] if words and words[0] in brands else None,
                             " > ".join(category) if category else None)
    return SimCatalog([r for r in homedepot_records() if r.key in products], qrels, traits, bool(paths))
