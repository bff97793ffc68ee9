"""built_to_last: what a walk builds goes straight to the oldest generation, and the
caller's young garbage is still collected rather than carried along. freeze_new: what a
frozen_heap block made is frozen with the rest, until the block ends."""

import gc

from gradviz.runtime.quiet_gc import built_to_last


class Cycle:
    def __init__(self):
        self.me = self


def test_what_is_built_lands_in_the_oldest_generation_and_young_garbage_is_collected():
    was_enabled = gc.isenabled()
    gc.enable()
    try:
        gc.collect()
        Cycle()  # young, unreachable garbage made before the block
        with built_to_last():
            assert not gc.isenabled()
            built = [[i] for i in range(1000)]  # lists: containers the GC tracks
        assert gc.isenabled()
        assert not any(type(o) is Cycle for o in gc.get_objects())
        oldest = {id(o) for o in gc.get_objects(2)}
        assert id(built) in oldest and all(id(item) in oldest for item in built)
    finally:
        if not was_enabled:
            gc.disable()


def test_collections_stay_off_when_they_were_off():
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        with built_to_last():
            pass
        assert not gc.isenabled()
    finally:
        if was_enabled:
            gc.enable()


def test_freeze_new_freezes_what_a_frozen_heap_block_made_until_it_ends():
    from gradviz.runtime.quiet_gc import freeze_new, frozen_heap

    freeze_new()  # outside a block: nothing
    assert gc.get_freeze_count() == 0
    with frozen_heap():
        before = gc.get_freeze_count()
        made = [[i] for i in range(100)]
        freeze_new()
        assert gc.get_freeze_count() >= before + len(made)
        assert not any(o is made for o in gc.get_objects())  # frozen objects are not listed
    assert gc.get_freeze_count() == 0
    assert any(o is made for o in gc.get_objects())
