"""The life of one stepped pass (backward or forward), shared by both steppers.

A pass is new, then running, then over: finished, failed (the user's exception) or
aborted. Once over, a stepper says so once (``step()`` returns None, or the user's
exception is raised), and any later call gets a :class:`StepperError` that recalls how
it ended: :class:`PassEnd` holds that rule for both.
"""

from __future__ import annotations

import enum

from gradviz.errors import GradvizError


class StepperError(GradvizError):
    """The stepper cannot do what was asked (it has finished, was aborted, ...)."""


class StepperState(enum.Enum):
    """Where one pass of a stepper stands."""

    NEW = "new"
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    ABORTED = "aborted"

    @property
    def over(self) -> bool:
        return self in (StepperState.FINISHED, StepperState.FAILED, StepperState.ABORTED)


class PassEnd:
    """How a pass's end is told to its caller: once as it is, then as a StepperError.

    ``name`` is what the pass is called in messages ("backward", "the forward"),
    ``again`` how to step once more ("a new forward pass", "a new one").
    """

    def __init__(self, name: str, again: str, aborted: str):
        self.name = name
        self.again = again
        self.aborted = aborted  # what ended an aborted pass ("this stepper was aborted")
        self.told = False  # the end (or the failure) was already returned or raised

    def reached(self, state: StepperState, error: BaseException | None,
                where: str = "") -> None:
        """Called with nothing left to run: returns the first time, then raises."""
        if state is StepperState.FAILED:
            self.failed(error, where)
        if state is StepperState.ABORTED:
            raise StepperError(f"{self.aborted}: start {self.again} to step again")
        if self.told:
            raise StepperError(f"{self.name} has finished: start {self.again} to step again")
        self.told = True

    def failed(self, error: BaseException, where: str = "") -> None:
        """Raise the user's exception the first time, then a StepperError that recalls it."""
        if self.told:
            where = f" {where}" if where else ""
            raise StepperError(f"{self.name} failed{where} ({type(error).__name__}): "
                               f"start {self.again} to step again")
        self.told = True
        raise error
