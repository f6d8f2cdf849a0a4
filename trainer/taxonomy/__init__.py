"""Category trees (from catalog paths or the Google Product Taxonomy) and taxonomy assignment."""

from trainer.taxonomy.tree import CategoryTree, split_path

__all__ = ["CategoryTree", "split_path"]
