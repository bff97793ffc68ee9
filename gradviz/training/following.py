"""Which optimizer and which parameters a watch follows, as they change under it.

A parameter keeps its index in the record whatever happens: the optimizer's param groups
change (``add_param_group``), a layer is replaced after the optimizer was built (the
old tensor keeps its name, marked replaced: the optimizer still steps it; the new one
is in no group, and the not-in-optimizer audit says so), or a new optimizer takes over
the model's parameters (stage 2 of a fine-tune: the watch follows it from its first
step, seen by torch's global step hooks; two optimizers that take turns, a GAN's, keep
the watch on the one it was given).

A mixin of :class:`~gradviz.training.watch.Watch`: it reads and sets the watch's
``model``, ``inner``, ``optimizer``, ``_params``, ``_index``, ``_infos``, ``_stats``,
``_auditor``, ``_writer``, ``_current`` and ``iteration``.
"""

from __future__ import annotations

import torch

from gradviz.model.runs.events import EventKind
from gradviz.model.runs.history import EventRecord, ParamInfo

#: How a parameter the model let go of is named in the record.
REPLACED = " (replaced)"


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The module the user wrote, inside the wrappers that torch.compile (``_orig_mod``)
    and DDP / DataParallel (``module``) put around it: its parameter and module names
    are the user's own, without their prefixes."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    for _ in range(8):
        if isinstance(model, (DistributedDataParallel, DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
            model = model._orig_mod
        else:
            break
    return model




class Following:
    """The optimizer and the parameters a watch follows; see the module docstring."""

    def _track_params(self) -> list[EventRecord]:
        """The parameters measured: the optimizer's, then the model's other trainable ones
        (measured, never stepped: the not-in-optimizer audit). A parameter keeps its index
        when the param groups or the model change; one the model no longer has (a layer
        replaced after the optimizer was built) keeps its old name, marked replaced. The
        events that says what changed."""
        names: dict[int, str] = {}
        for name, param in self.inner.named_parameters(remove_duplicate=False):
            names.setdefault(id(param), name)
        in_model = set(names)
        group_of: dict[int, int] = {}
        order: list[torch.Tensor] = []
        if self.optimizer is not None:
            for g, group in enumerate(self.optimizer.param_groups):
                for i, param in enumerate(group["params"]):
                    group_of.setdefault(id(param), g)
                    order.append(param)
        for param in self.model.parameters():
            if id(param) not in group_of and (param.requires_grad or self.optimizer is None):
                order.append(param)
        for param in order:
            if id(param) not in self._index:
                self._index[id(param)] = len(self._params)
                self._params.append(param)
        events = []
        before = {info.index: info.name for info in self._infos}
        self._signature = self._groups_signature()
        self._model_signature = self._model_params()
        self._registered = False
        self._stats.set_params(self._params)
        self._infos = []
        orphans = []
        for index, param in enumerate(self._params):
            name = names.get(id(param))
            if name is None and index in before:  # the model lets go of it: replaced
                name = before[index].removesuffix(REPLACED) + REPLACED
                orphans.append(index)
                if not before[index].endswith(REPLACED):
                    events.append(self._replaced(before[index], group_of, names))
            elif name is None:
                g = group_of.get(id(param))
                name = f"param{index}" if g is None else \
                    f"group{g}[{self.optimizer.param_groups[g]['params'].index(param)}]"
            self._infos.append(ParamInfo(
                index, name, name.removesuffix(REPLACED).rpartition(".")[0], tuple(param.shape),
                param.numel(), str(param.dtype).removeprefix("torch."), group_of.get(id(param)),
                self._stats.sampled[index]))
        in_optimizer = [info.param_group is not None or self.optimizer is None
                        for info in self._infos]
        self._auditor.set_params([i.name for i in self._infos], [i.layer for i in self._infos],
                                 in_optimizer, [i for i in orphans if id(self._params[i])
                                                not in in_model])
        self._writer.add_params(self._infos)
        self._membership_checked = False
        return events

    def _replaced(self, name: str, group_of: dict[int, int], names: dict[int, str]
                  ) -> EventRecord:
        new = next((p for p in self.model.parameters() if names.get(id(p)) == name), None)
        where = ("the new one is in no optimizer group: it is not trained" if new is not None
                 and id(new) not in group_of else "the new one is stepped too")
        if new is None:
            where = "the model has no parameter of that name any more"
        return EventRecord(self.iteration + 1, EventKind.PARAM_REPLACED, name,
                           f"the optimizer still steps the old tensor; {where}")

    def _model_params(self) -> tuple[int, ...]:
        return tuple(map(id, self.model.parameters()))

    def _groups_signature(self) -> tuple:
        if self.optimizer is None:
            return ()
        return tuple(len(group["params"]) for group in self.optimizer.param_groups)

    def _maybe_follow(self, optimizer) -> None:
        if id(optimizer) in self._companions:
            return
        ours = {id(p) for p in self.model.parameters()}
        stepped = sum(1 for group in optimizer.param_groups for p in group["params"]
                      if id(p) in ours)
        if not stepped:
            return  # another model's optimizer
        previous = self.optimizer
        if id(optimizer) in self._left:  # two optimizers take turns (a GAN): keep the first
            self._companions.add(id(previous))
            detail = (f"{type(optimizer).__name__} and {type(previous).__name__} both step this "
                      f"model: the watch follows the {type(optimizer).__name__} it was given")
        else:
            detail = (f"a new {type(optimizer).__name__} steps {stepped} of the model's "
                      f"parameters, not the {type(previous).__name__} the watch followed: "
                      "iterations are its steps from here on")
        self._left.add(id(previous))
        self.optimizer = optimizer
        events = self._track_params()
        self._current.events += [EventRecord(self.iteration + 1, EventKind.OPTIMIZER_CHANGED, "",
                                             detail), *events]

