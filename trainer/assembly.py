"""Assembling a training run, shared by the drivers (``cartwise train`` on Home Depot or from Kafka, the
ablation, the quality gate): the miner, the encoder over a catalog, the Home Depot setup, full
validation, and publishing a trained model into the registry."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from cartwise.datasets import data_root
from cartwise.registry import TOKENIZER_FILE, Manifest, ModelRegistry
from cartwise.settings import Settings
from encoders.export import publish_model
from encoders.model import PRETRAINED_NAME, DualEncoder, pretrained_path
from trainer.config import TrainConfig
from trainer.data import LabeledQuery, labeled_queries, split_queries
from trainer.encoding import TextEncoder, freeze_lower_layers, load_tokenizer
from trainer.evaluation.homedepot import catalog_texts, lexical_texts, load_homedepot
from trainer.evaluation.metrics import scalar_metrics
from trainer.lexical_scores import LexicalScores
from trainer.loop import TrainResult
from trainer.miners import ANCEMiner, BM25Miner, RandomMiner, TBHNSMiner
from trainer.miners.base import Miner
from trainer.taxonomy import CategoryTree
from trainer.validation import Validator


@dataclass
class TrainOutcome:
    """What a run produced: the loop's result, full-validation metrics, the published manifest (if any)."""

    result: TrainResult
    val_metrics: dict
    manifest: Manifest | None
    seconds: float

    def summary(self) -> dict:
        """Flat dict for the CLI: version, steps, best step, early stop, seconds, validation metrics."""
        return {"version": self.manifest.version if self.manifest else None, "steps_run": self.result.steps_run,
                "best_step": self.result.best_step, "stopped_early": self.result.stopped_early,
                "seconds": round(self.seconds, 1), **{f"val_{k}": v for k, v in scalar_metrics(self.val_metrics).items()}}


def make_miner(config: TrainConfig, product_texts: list[str], train: list[LabeledQuery],
               paths: list[list[str]] | None) -> Miner | None:
    """The miner ``config.negatives`` names. Raises ValueError for TB-HNS without category paths."""
    n, seed = len(product_texts), config.seed
    if config.negatives == "inbatch":
        return None
    if config.negatives == "random":
        return RandomMiner(n, seed)
    if config.negatives == "bm25":
        return BM25Miner.build(product_texts, [q.text for q in train], config.mine_depth, seed)
    if config.negatives == "ance":
        return ANCEMiner(n, seed)
    if paths is None:
        raise ValueError("TB-HNS needs category paths: run `cartwise taxonomy assign` first")
    hard = {"same_leaf": config.same_leaf, "sibling": config.sibling, "cousin": config.cousin,
            "other_department": config.other_department}
    return TBHNSMiner(CategoryTree(paths), hard=hard, curriculum_steps=config.curriculum_steps, seed=seed)


def homedepot_watermark(judgments: Path | None) -> dict:
    """The data a Home Depot run saw: the judgments file's sha256 (static data has no offsets)."""
    path = judgments or data_root() / "homedepot" / "judgments.csv"
    return {"source": "homedepot", "judgments_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


@dataclass
class HomeDepotSetup:
    """Everything a Home Depot run works on: catalog ids/texts, query splits, the model and its encoder."""

    ids: list[str]
    texts: list[str]
    train: list[LabeledQuery]
    val: list[LabeledQuery]
    model: DualEncoder
    encoder: TextEncoder
    lexical: LexicalScores | None  # BM25 over the catalog when validation scores the hybrid ranking

    def validator(self, queries: int | None, distractors: int, seed: int) -> Validator:
        """A validator over ``queries`` validation queries (None: all) and their judged products plus
        ``distractors`` random others, scoring the hybrid ranking when ``lexical`` is set."""
        validator = Validator.sample(self.val, len(self.ids), queries, distractors, seed)
        return validator.hybrid(self.lexical) if self.lexical else validator


def setup_homedepot(settings: Settings, config: TrainConfig, init_version: str | None = None,
                    judgments: Path | None = None, products: Path | None = None) -> HomeDepotSetup:
    """Load the data (the shared files unless ``judgments``/``products`` are given), split queries, build
    the model (pretrained or ``init_version``) with its lower layers frozen per ``config``, the text
    encoder over the catalog (cached frozen states), and BM25 over the catalog when ``config.selection``
    is hybrid."""
    torch.manual_seed(config.seed)
    data = load_homedepot(judgments, products)
    ids, texts = catalog_texts(data)
    train, val = split_queries(labeled_queries(data.qrels, {pid: i for i, pid in enumerate(ids)}), config.val_fraction)
    encoder = build_encoder(settings, config, texts, init_version)
    lexical = LexicalScores(settings.lexical, lexical_texts(data, ids)) if config.selection == "hybrid" else None
    return HomeDepotSetup(ids, texts, train, val, encoder.model, encoder, lexical)


def tokenizer_path() -> Path:
    """The MiniLM tokenizer every version shares."""
    return pretrained_path() / TOKENIZER_FILE


def build_encoder(settings: Settings, config: TrainConfig, product_texts: list[str],
                  init_version: str | None) -> TextEncoder:
    """The model (pretrained, or ``init_version``'s weights) on the best device with its lower layers
    frozen per ``config``, wrapped in a text encoder over ``product_texts`` (frozen states cached)."""
    registry = ModelRegistry(settings.models_dir)
    model = DualEncoder.from_registry(registry, init_version) if init_version else DualEncoder.pretrained(config.projection_dim)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    frozen = freeze_lower_layers(model, config.trainable_layers)
    return TextEncoder(model, load_tokenizer(tokenizer_path(), config.max_product_tokens),
                       load_tokenizer(tokenizer_path(), config.max_query_tokens), product_texts, frozen,
                       settings.data_dir / "train_cache")


def publish_trained(settings: Settings, model: DualEncoder, config: TrainConfig, init_version: str | None,
                    metrics: dict, **provenance) -> Manifest:
    """Publish a trained model as the next registry version (a candidate): the manifest records the
    metrics, the full config with ``trained: True``, what it was initialized from, and ``provenance``
    (the data watermark and counts)."""
    with torch.no_grad():
        return publish_model(ModelRegistry(settings.models_dir), model.to("cpu").eval(), tokenizer_path(),
                             base=PRETRAINED_NAME, metrics=metrics,
                             config={**config.model_dump(), "trained": True,
                                     "init": init_version or PRETRAINED_NAME, **provenance})


def validate_full(setup: HomeDepotSetup) -> dict:
    """Metrics of the current model on the whole validation split over the whole catalog (exact search;
    the hybrid ranking when the setup has BM25 scores, with the dense ranking's under ``"dense"``)."""
    setup.model.eval()
    return setup.validator(None, len(setup.ids), 0).run(setup.encoder, with_dense=True)
