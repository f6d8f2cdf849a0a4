"""The quality gate's rule, duration parsing, the cycle lock, and a cycle with no broker."""

import pytest
from click.testing import CliRunner
from filelock import FileLock
from portpicker import pick_unused_port

from cartwise.app.cli import main
from cartwise.settings import Settings
from trainer.config import TrainConfig
from trainer.cycle import LOCK_FILE, CycleBusy, parse_duration, run_cycle
from trainer.gate import quality_gate


def test_gate_passes_within_the_margin_and_fails_beyond_it():
    active = {"ndcg@10": 0.36}
    assert quality_gate({"ndcg@10": 0.355}, active, margin=0.01).passed
    assert quality_gate({"ndcg@10": 0.40}, active, margin=0.0).passed
    verdict = quality_gate({"ndcg@10": 0.34}, active, margin=0.01)
    assert not verdict.passed and verdict.reason.startswith("gate failed: ndcg@10 0.3400 vs active 0.3600")
    assert quality_gate({"ndcg@10": 0.1}, None, margin=0.0).passed


def test_durations():
    assert [parse_duration(t) for t in ("90s", "15m", "6h", "1d", "30")] == [90, 900, 21600, 86400, 30]
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


def test_a_second_cycle_refuses_while_one_holds_the_lock(tmp_path):
    settings = Settings(data_dir=tmp_path, kafka_bootstrap="127.0.0.1:1")
    with FileLock(tmp_path / LOCK_FILE):
        with pytest.raises(CycleBusy, match="another trainer cycle"):
            run_cycle(settings, TrainConfig())


@pytest.mark.slow  # kafka-python gives up on an absent broker after its own timeouts: 15-30 s
def test_trainer_cycle_without_a_broker_exits_non_zero_with_the_reason(tmp_path):
    port = pick_unused_port()  # nothing listens there
    result = CliRunner().invoke(main, ["trainer", "cycle"], env={
        "CARTWISE_DATA_DIR": str(tmp_path), "CARTWISE_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"})
    assert result.exit_code == 1
    assert f"no Kafka broker at 127.0.0.1:{port}" in result.output


def test_a_cycle_warns_when_retention_removed_events_past_its_watermark(caplog):
    from types import SimpleNamespace

    from trainer.incremental import warn_if_expired

    records = [SimpleNamespace(partition=0, offset=120), SimpleNamespace(partition=0, offset=121),
               SimpleNamespace(partition=1, offset=7)]
    with caplog.at_level("WARNING", logger="trainer.incremental"):
        warn_if_expired("behavior.carts", {0: 100, 1: 7, 2: 3}, records)
    assert [r.getMessage() for r in caplog.records] == [
        "behavior.carts[0]: the watermark is at offset 100 but the first kept record is 120: 20 events expired "
        "before a cycle read them (retention: CARTWISE_RETENTION_S)"]


@pytest.mark.parametrize("layers", [0, 3])
def test_a_cycle_gates_and_swaps_the_candidate_with_its_query_tower_distilled_again_or_says_it_has_none(
        tmp_path, monkeypatch, layers):
    from types import SimpleNamespace

    import trainer.cycle as cycle
    from trainer.gate import Verdict

    distilled, gated, swapped = [], [], []
    monkeypatch.setattr(cycle, "train_from_kafka", lambda s, c: SimpleNamespace(manifest=SimpleNamespace(version="v3")))
    monkeypatch.setattr(cycle, "served_copy", lambda registry, version, precision: "v4")  # its int8 copy
    monkeypatch.setattr(cycle, "publish_distilled", lambda s, version, config:
                        distilled.append((version, config.layers)) or SimpleNamespace(version="v5"))
    monkeypatch.setattr(cycle, "gate_metrics", lambda s, version, j, p: gated.append(version) or {"ndcg@10": 0.5})
    monkeypatch.setattr(cycle, "quality_gate", lambda candidate, active, margin: Verdict(True, "better"))
    monkeypatch.setattr(cycle, "request_swap", lambda s, version, reason, previous=None: swapped.append(version))
    result = run_cycle(Settings(data_dir=tmp_path, query_tower_layers=layers), TrainConfig())
    served = "v5" if layers else "v4"
    assert distilled == ([("v4", 3)] if layers else [])
    assert gated == swapped == [served] and result.candidate == served and result.swap_requested
    assert ("3-layer query tower distilled" in result.query_tower) if layers else ("full encoder" in result.query_tower)
