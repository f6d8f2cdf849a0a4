"""The worker's faust consumer (streams/transport.py), pure logic: faust's livelock check leaves out the
partitions the worker paused, which fetch nothing by design."""

from types import SimpleNamespace

from faust.types import TP

from streams.transport import _transport_class


def test_the_livelock_check_skips_paused_partitions_only():
    checked = []
    consumer_class = _transport_class(50, False).Consumer
    consumer = consumer_class.__new__(consumer_class)
    consumer._thread = SimpleNamespace(verify_event_path=lambda now, tp: checked.append(tp))
    paused, running = TP("app-user_histories-changelog", 0), TP("behavior.carts", 0)
    consumer._paused_partitions = {paused}
    for tp in (paused, running):
        consumer.verify_event_path(1.0, tp)
    assert checked == [running]
