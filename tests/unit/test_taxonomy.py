"""Category tree levels and the taxonomy assignment rule."""

import numpy as np
import pytest

from trainer.taxonomy import CategoryTree, split_path
from trainer.taxonomy.assign import (
    GoogleTaxonomy,
    assign,
    read_assignments,
    write_assignments,
)

PATHS = [
    ["Tools", "Saws", "Circular"],   # 0
    ["Tools", "Saws", "Circular"],   # 1
    ["Tools", "Saws", "Miter"],      # 2
    ["Tools", "Drills", "Cordless"], # 3
    ["Garden", "Hoses"],             # 4
    [],                              # 5 uncategorized
    ["Tools", "Saws"],               # 6 shallow: sits on the parent node itself
]


def test_split_path_per_source_separator():
    assert split_path("Clothing >> Women's Clothing >> ", ">>") == ["Clothing", "Women's Clothing"]
    assert split_path("electronics.smartphone", ".") == ["electronics", "smartphone"]


def test_levels_of_a_deep_leaf():
    tree = CategoryTree(PATHS)
    assert tree.level(0, "same_leaf").tolist() == [1]
    assert sorted(tree.level(0, "sibling").tolist()) == [2, 6]
    assert tree.level(0, "cousin").tolist() == [3]
    assert tree.level(0, "other_department").tolist() == [4]


def test_uncategorized_products_have_no_relations_and_are_never_returned():
    tree = CategoryTree(PATHS)
    assert all(len(tree.level(5, lv)) == 0 for lv in ("same_leaf", "sibling", "cousin", "other_department"))
    assert 5 not in tree.level(4, "other_department")


def test_shallow_leaf_has_no_cousins():
    tree = CategoryTree(PATHS)
    assert tree.level(4, "cousin").tolist() == []
    assert sorted(tree.level(4, "other_department").tolist()) == [0, 1, 2, 3, 6]


def test_unknown_level_is_an_error():
    with pytest.raises(ValueError, match="unknown taxonomy level"):
        CategoryTree(PATHS).level(0, "aunt")


def test_assign_drops_rare_departments_and_low_scores(tmp_path):
    taxonomy = GoogleTaxonomy([1, 2, 3], [["Hardware", "Saws"], ["Hardware", "Drills"], ["Mature", "Weapons"]])
    categories = np.eye(3, dtype=np.float32)
    products = np.array([[1, 0, 0], [0, 1, 0], [0.9, 0.1, 0], [0.1, 0.5, 0.9]], dtype=np.float32)
    products /= np.linalg.norm(products, axis=1, keepdims=True)
    ids = ["a", "b", "d", "c"]
    # first pass: Mature gets only c (25 %): dropped, so c falls back to its best Hardware category
    result = assign(ids, products, taxonomy, categories, min_score=0.4, min_department_share=0.3)
    assert [r.category_id for r in result] == [1, 2, 1, 2]
    assert result[3].score == pytest.approx(0.5 / np.linalg.norm([0.1, 0.5, 0.9]), rel=1e-5)
    # below min_score a product stays unassigned
    strict = assign(ids, products, taxonomy, categories, min_score=0.5, min_department_share=0.3)
    assert strict[3].category_id is None and strict[3].path == []
    out = tmp_path / "a.csv"
    write_assignments(strict, out)
    assert read_assignments(out) == {"a": ["Hardware", "Saws"], "b": ["Hardware", "Drills"], "d": ["Hardware", "Saws"]}


def test_google_taxonomy_file_loads():
    taxonomy = GoogleTaxonomy.load()
    assert len(taxonomy.ids) == 5595
    assert taxonomy.paths[taxonomy.ids.index(1)] == ["Animals & Pet Supplies"]
