"""Integration fixtures shared across modules: an embedded broker per module, a slice of the real Home Depot
data."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import NamedTuple

import pytest
from portpicker import pick_unused_port

from cartwise.app.broker import EmbeddedBroker

HOMEDEPOT = Path(__file__).resolve().parents[3] / "shared" / "data" / "homedepot"
N_QUERIES = 40
N_OTHER_PRODUCTS = 2000


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """An embedded broker for one test module, outliving its services (a restarted one finds its events)."""
    with EmbeddedBroker(pick_unused_port(), tmp_path_factory.mktemp("broker") / "broker.log") as running:
        yield running


class HomeDepotSlice(NamedTuple):
    """Judgments and products CSVs of a slice, and its size."""

    judgments: Path
    products: Path
    n_queries: int
    n_other_products: int


@pytest.fixture(scope="session")
def slice_files(tmp_path_factory) -> HomeDepotSlice:
    """(judgments, products) CSVs: every row of the first N_QUERIES distinct queries of judgments.csv, and
    the judged products plus the first N_OTHER_PRODUCTS other products of products.csv."""
    if not (HOMEDEPOT / "judgments.csv").is_file():
        pytest.skip(f"{HOMEDEPOT} is absent")
    out = tmp_path_factory.mktemp("homedepot")
    with open(HOMEDEPOT / "judgments.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header, rows = reader.fieldnames, list(reader)
    queries: list[str] = []
    for row in rows:
        if row["search_term"] not in queries:
            queries.append(row["search_term"])
            if len(queries) == N_QUERIES:
                break
    chosen = set(queries)
    judged_rows = [row for row in rows if row["search_term"] in chosen]
    judged = {row["product_uid"] for row in judged_rows}
    with open(out / "judgments.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=header)
        writer.writeheader()
        writer.writerows(judged_rows)

    with open(HOMEDEPOT / "products.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        product_header, kept, others = reader.fieldnames, [], 0
        for row in reader:
            if row["product_uid"] in judged:
                kept.append(row)
            elif others < N_OTHER_PRODUCTS:
                kept.append(row)
                others += 1
    assert product_header == ["product_uid", "product_title"]
    with open(out / "products.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=product_header)
        writer.writeheader()
        writer.writerows(kept)
    return HomeDepotSlice(out / "judgments.csv", out / "products.csv", N_QUERIES, N_OTHER_PRODUCTS)
