"""ForwardEvent: one torch operation of a forward pass, and what it did to the graph.

Made by :class:`~gradviz.engine.forward_ops.ForwardRecording`: the node it recorded,
or the :class:`Exclusion` that says why it recorded none.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import torch

from gradviz.engine.source_lines import SourceLine
from gradviz.model.cells import forward_event_html
from gradviz.model.summary import TensorSummary

if TYPE_CHECKING:
    from gradviz.engine.forward_ops import ForwardRecording


class ForwardAborted(Exception):
    """Raised inside the forward, at its next torch operation, to end it (see ``abort``)."""


class Exclusion(str, enum.Enum):
    """Why an operation recorded no node in the autograd graph."""

    NO_INPUT_REQUIRES_GRAD = "no input requires grad"
    GRAD_MODE_OFF = "grad mode is off (torch.no_grad)"
    INFERENCE_MODE = "inference_mode"
    DETACHED_INPUT = "a detached input"
    CUT_INPUT = "an input with no gradient path"
    DETACH = "detached: the result is cut from the graph"
    NOT_DIFFERENTIABLE = "no derivative"
    EXISTING_TENSOR = "returned a tensor made earlier (no new node)"
    NEW_LEAF = "made a new leaf tensor that requires grad"

    def __str__(self) -> str:
        return self.value


#: Exclusions that cut a gradient path when an input required grad.
CUTS = (Exclusion.DETACH, Exclusion.GRAD_MODE_OFF, Exclusion.INFERENCE_MODE,
        Exclusion.NOT_DIFFERENTIABLE)


class ForwardEvent:
    """One torch operation of a forward pass.

    ``op``: the torch function's name (``conv2d``, ``__rmul__``, ``relu_``).
    ``module``: dotted path of the innermost module whose forward ran it (``""`` the
    model itself, ``None`` outside any module). ``source``: the user's line that
    called it (the first frame outside torch and gradviz). ``shapes``: every tensor
    output's shape. ``node_type`` / ``seq``: the node it recorded (the output's
    ``grad_fn``), ``None`` when it recorded none; then ``exclusion`` says why and
    ``detail`` adds who (``conv1.weight has requires_grad=False``). ``seqs``: every
    node it recorded (a composite op may record several), in the order made.
    ``key`` / ``keys``: their graph keys, once :meth:`ForwardRecording.graph` has run
    (``None`` for a node that is not behind the roots). ``output``: a
    :class:`TensorSummary` of the first tensor output, ``zeros``: its fraction of
    zeros (after a ReLU), both computed when first read.
    """

    __slots__ = ("index", "op", "module", "source", "shapes", "node_type", "seq", "seqs",
                 "key", "keys", "exclusion", "detail", "cut", "inputs", "grad_enabled",
                 "_nodes", "_tensor", "_version", "_storage", "_summary", "_zeros", "_owner")

    def __init__(self, index, op, module, source, shapes, grad_enabled, owner):
        self.index: int = index
        self.op: str = op
        self.module: str | None = module
        self.source: SourceLine | None = source
        self.shapes: tuple[tuple[int, ...], ...] = shapes
        self.grad_enabled: bool = grad_enabled
        self.node_type: str | None = None
        self.seq: int | None = None
        self.seqs: tuple[int, ...] = ()
        self.key: str | None = None
        self.keys: tuple[str, ...] = ()
        self.exclusion: Exclusion | None = None
        self.detail: str = ""
        self.cut: int | None = None  # index of the event where a gradient path was cut
        self.inputs: tuple[int | str, ...] = ()  # producer event index or leaf name
        self._nodes: tuple = ()
        self._tensor: torch.Tensor | None = None
        self._version = 0
        self._storage = 0
        self._summary: TensorSummary | None = None
        self._zeros: float | None = None
        self._owner: ForwardRecording = owner

    @property
    def recorded(self) -> bool:
        """Whether the op recorded a node in the autograd graph."""
        return self.seq is not None

    @property
    def reason(self) -> str | None:
        """Why no node was recorded, in words; None when one was."""
        if self.exclusion is None:
            return None
        return f"{self.exclusion.value} ({self.detail})" if self.detail else self.exclusion.value

    @property
    def shape(self) -> tuple[int, ...]:
        return self.shapes[0]

    @property
    def output(self) -> TensorSummary | None:
        """Summary of the first tensor output; None if it was overwritten in place first."""
        self._owner._summarize(self)
        return self._summary

    @property
    def zeros(self) -> float | None:
        """Fraction of the first output's elements that are exactly zero."""
        self._owner._summarize(self)
        return self._zeros

    @property
    def overwritten(self) -> bool:
        """The output was changed in place before it could be summarized."""
        return self.output is None

    def _repr_html_(self) -> str:
        """A notebook cell shows the operation: its line, and the node it recorded or why none."""
        return forward_event_html(self)

    def __repr__(self) -> str:
        where = f", module {self.module!r}" if self.module is not None else ""
        made = self.key or self.node_type or f"no node: {self.reason}"
        return f"ForwardEvent({self.index}, {self.op}{where}, {self.source}, {made})"
