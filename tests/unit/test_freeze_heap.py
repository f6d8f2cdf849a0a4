"""The service's heap freeze after start (cartwise.app.service.freeze_heap)."""

from __future__ import annotations

import gc

from cartwise.app.service import freeze_heap


def test_objects_alive_at_the_freeze_leave_the_collected_generations_and_later_ones_do_not():
    gc.unfreeze()
    try:
        before = [object()]
        freeze_heap()
        after = [object()]
        tracked = {id(o) for o in gc.get_objects()}
        assert gc.get_freeze_count() > 0
        assert id(before) not in tracked  # a full collection never walks it again
        assert id(after) in tracked  # what the service allocates later is collected as usual
    finally:
        gc.unfreeze()
