"""SessionState alone: given a state, when a transition or a key comes, then what it says.

No torch, no Textual: the rules of what is allowed, queued and shown live here.
"""

import threading

import pytest

from gradviz.model.state import (
    Action,
    Activity,
    Failure,
    InvalidTransition,
    Phase,
    SessionState,
)


def loaded(nodes=6, **kw) -> SessionState:
    state = SessionState()
    state.start_loading("demo")
    state.loaded("demo", nodes=nodes, has_optimizer=True, **kw)
    return state


def test_nothing_loaded_refuses_every_action_but_load_and_says_how_to_load():
    state = SessionState()
    for action in (Action.STEP, Action.CONTINUE, Action.FORWARD, Action.OPTIMIZER,
                   Action.TRAIN, Action.EXPORT):
        decision = state.request(action)
        assert decision.verdict == "refused" and "no scenario" in decision.reason
    assert state.view().allowed(Action.LOAD)


def test_a_failed_load_stays_on_screen_and_leaves_nothing_running():
    # given a load that fails (a syntax error, a forward that raises, a leaf as root, ...)
    state = SessionState()
    state.start_loading("broken.py")
    assert state.view().activity is Activity.LOADING
    assert state.request(Action.STEP).verdict == "refused"
    # when it fails
    state.load_failed(Failure(Activity.LOADING, "broken.py:1: syntax error", hint="p: picker"))
    # then the error is there, nothing spins, and a new load may start
    view = state.view()
    assert view.activity is Activity.IDLE and not view.busy
    assert view.failure.message == "broken.py:1: syntax error"
    assert view.allowed(Action.LOAD) and not view.allowed(Action.STEP)


def test_a_failed_load_keeps_the_session_that_was_shown():
    state = loaded()
    state.request(Action.STEP)
    state.progressed(done=1, pending="PowBackward0#0", finished=False)
    state.finished()
    state.start_loading("other.py")
    state.load_failed(Failure(Activity.LOADING, "other.py: build() raised KeyError: 'x'"))
    view = state.view()
    assert view.scenario == "demo" and view.done == 1 and view.phase is Phase.PAUSED
    assert view.failure is not None
    # the user acts on what is shown: the old error leaves the screen
    assert state.request(Action.STEP).verdict == "start"
    assert state.view().failure is None


def test_a_step_pressed_while_stepping_is_queued_not_dropped():
    state = loaded()
    assert state.request(Action.STEP).verdict == "start"
    for _ in range(19):
        assert state.request(Action.STEP).verdict == "queued"
    assert state.view().queued_steps == 19
    taken = 0
    while state.take_queued_step():
        taken += 1
    assert taken == 19 and state.view().queued_steps == 0


def test_continue_while_stepping_runs_after_the_steps_and_a_second_continue_pauses():
    state = loaded()
    state.request(Action.STEP)
    state.request(Action.STEP)
    assert state.request(Action.CONTINUE).verdict == "queued"
    assert state.request(Action.CONTINUE).verdict == "queued"  # coalesced: one continue
    assert state.view().continue_after
    assert state.take_queued_step() and not state.take_queued_step()
    assert state.take_continue()
    assert state.view().activity is Activity.CONTINUING
    assert state.request(Action.CONTINUE).verdict == "pause"
    assert state.stop_requested
    state.finished()
    assert state.view().note == "paused" and not state.view().busy


def test_the_end_of_backward_drops_the_steps_still_queued():
    state = loaded()
    state.request(Action.STEP)
    for _ in range(5):
        state.request(Action.STEP)
    state.progressed(done=6, pending=None, finished=True)
    assert state.view().queued_steps == 0 and not state.take_queued_step()
    state.finished()
    assert state.request(Action.STEP).reason.startswith("backward has finished")


def test_escape_clears_the_queue_and_sets_the_event_a_forward_checks():
    state = loaded()
    state.request(Action.STEP)
    state.request(Action.STEP)
    assert state.request(Action.STOP).verdict == "start"
    assert state.stop_event.is_set() and state.view().queued_steps == 0
    assert not state.take_queued_step()
    state.finished()
    assert not state.stop_event.is_set() and state.view().note == "stopped"
    assert state.request(Action.STOP).verdict == "refused"  # nothing runs now


def test_escape_during_a_forward_keeps_the_graph_that_was_shown():
    state = loaded(nodes=134)
    state.request(Action.FORWARD)
    state.request(Action.STOP)
    state.finished()
    view = state.view()
    assert view.phase is Phase.PAUSED and view.nodes == 134 and view.forwards == 1


def test_other_keys_while_busy_are_refused_with_the_reason():
    state = loaded()
    state.request(Action.CONTINUE)
    for action in (Action.FORWARD, Action.TRAIN, Action.EXPORT, Action.OPTIMIZER):
        decision = state.request(action)
        assert decision.verdict == "refused" and "busy: continuing" in decision.reason


def test_a_backward_failure_marks_its_node_and_offers_a_new_forward():
    state = loaded()
    state.request(Action.STEP)
    failure = Failure(Activity.STEPPING, "backward failed at Mul#0: ZeroDivisionError", "Mul#0",
                      "f: a new forward pass")
    state.backward_failed(failure, done=2)
    state.failed(failure)
    view = state.view()
    assert view.phase is Phase.FAILED and view.failure.node == "Mul#0" and view.pending is None
    assert not view.allowed(Action.STEP) and not view.allowed(Action.CONTINUE)
    assert view.allowed(Action.FORWARD)
    assert "backward failed: f for a new forward pass" == view.why_not(Action.STEP)
    state.request(Action.EXPORT)  # acting on the failed graph keeps its error in sight
    assert state.view().failure == failure
    state.finished()
    state.request(Action.FORWARD)
    state.forward_made(6)
    assert state.view().failure is None and state.view().phase is Phase.PAUSED


def test_a_failed_forward_keeps_the_paused_backward():
    state = loaded()
    state.request(Action.STEP)
    state.progressed(done=3, pending="x", finished=False)
    state.finished()
    state.request(Action.FORWARD)
    state.failed(Failure(Activity.FORWARD, "scenario 'demo': forward() raised ValueError: no"))
    view = state.view()
    assert view.phase is Phase.PAUSED and view.done == 3 and view.pending == "x"
    assert view.allowed(Action.STEP)


def test_the_optimizer_steps_each_backward_once():
    state = loaded()
    assert state.request(Action.OPTIMIZER).reason == "finish backward first (c continues)"
    state.request(Action.CONTINUE)
    state.progressed(done=6, pending=None, finished=True)
    state.finished()
    assert state.request(Action.OPTIMIZER).verdict == "start"
    state.optimizer_stepped(1)
    state.finished()
    decision = state.request(Action.OPTIMIZER)
    assert decision.verdict == "refused" and "already stepped" in decision.reason
    state.request(Action.FORWARD)
    state.forward_made(6)
    state.finished()
    assert not state.view().applied and state.view().iteration == 1


def test_a_session_of_one_graph_cannot_forward_or_train():
    state = SessionState()
    state.start_loading("show")
    state.loaded("show", nodes=3, can_forward=False)
    for action in (Action.FORWARD, Action.TRAIN):
        assert "one graph" in state.request(action).reason


def test_transitions_out_of_order_are_bugs_not_states():
    state = loaded()
    state.request(Action.STEP)
    with pytest.raises(InvalidTransition):
        state.begin(Action.CONTINUE)
    with pytest.raises(InvalidTransition):
        state.loaded("other", nodes=1)


def test_listeners_hear_each_change_after_the_lock_is_released():
    state = SessionState()
    seen = []

    def listener(view):
        # another thread can take the lock at once: a listener may wait on other threads
        done = threading.Event()
        threading.Thread(target=lambda: (state.dismiss_failure(), done.set())).start()
        assert done.wait(5)
        seen.append(view.activity)

    state.subscribe(listener)
    state.start_loading("demo")
    assert seen == [Activity.LOADING]
