"""What an autograd node saved for backward, read without running anything.

A node's ``_saved_<name>`` attributes unpack what it saved. Unpacking is not always
a plain read: a tensor packed by a saved-tensors hook is unpacked by calling that
hook, and ``torch.utils.checkpoint(use_reentrant=False)`` installs hooks whose
unpack re-runs the checkpointed forward and keeps the recomputed activations.
A walk that read those would change what the user's program computes and holds.
So each saved tensor is first looked at through ``_raw_saved_<name>`` (a
``torch._C._autograd.SavedTensor``): when it has an unpack hook, it is described
from what the hook packed, without unpacking; only hook-free tensors are unpacked,
which costs nothing but tells whether the tensor was modified in place since it
was saved. (``torch.autograd.graph.disable_saved_tensors_hooks`` is no help: it
stops packing, not unpacking; checkpoint's unpack hook only fails under it after
it has begun its work.)

One saved tensor is described as ``{"shape", "dtype", "state"}``; ``"state"`` is None
when it can be read as it was saved (the key is always there, as the README says),
else:

- :data:`RECOMPUTED`: held by ``torch.utils.checkpoint``; backward re-runs the
  checkpointed forward to get it back. Its shape and dtype come from checkpoint's
  own record of what it packed, or are ``None`` where checkpoint kept none.
- :data:`MODIFIED_IN_PLACE`: an in-place operation changed it after it was saved,
  so backward through this node raises (PyTorch's "modified by an inplace
  operation"). Shape and dtype are the tensor's now.
- :data:`HOOKED`: packed by another saved-tensors hook (``save_on_cpu``, a user's
  own); ``"hook"`` names the unpack hook, shape and dtype are ``None``.

A node whose saved tensors backward has already freed is described by the one
string :data:`FREED` instead of a dict.

Saved non-tensor values (``args``) are made readable: an int64 that torch hands
Python as an unsigned 64-bit number (``ignore_index=-100`` arrives as
18446744073709551516) is turned back into its signed value; a loss's
``reduction`` is its name ("none", "mean", "sum") rather than torch's enum
number; and what torch saved only to lay out an input's gradient is not an
argument: ``<input>_sym_sizes`` goes to ``input_shapes`` (left out where the input
itself is saved, whose shape is shown there, or where an optional input was not
given), ``<input>_sym_strides`` / ``_sym_storage_offset`` are dropped, and
``<input>_sym_numel`` is dropped when that input's shape is known.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import BackwardCFunction
from torch.autograd.graph import Node

from gradviz.graph.values import plain
from gradviz.model.node_facts import FREED, HOOKED, MODIFIED_IN_PLACE, RECOMPUTED

_SAVED = "_saved_"
_RAW = "_raw_saved_"
_UINT64 = 1 << 64
_INT64_MAX = (1 << 63) - 1
_REDUCTIONS = {0: "none", 1: "mean", 2: "sum"}  # at::Reduction::Reduction
_CHECKPOINT_MODULE = "torch.utils.checkpoint"
_FREED_TEXT = "freed"  # "... saved tensors after they have already been freed"
_IN_PLACE_TEXT = "modified by an inplace operation"

# Deep graphs repeat a few descriptions over and over: one shared object per distinct
# value keeps a 1M-node graph small. Treat these values as read-only.
_shapes: dict[tuple[int, ...], tuple[int, ...]] = {}
shape_pool = _shapes  # read-only outside: shape_tuple fills it
_metas: dict[tuple, dict[str, Any]] = {}
meta_pool = _metas  # read-only outside: tensor_meta fills it
_saved_dicts: dict[tuple, dict[str, Any]] = {}
_args_dicts: dict[tuple, dict[str, Any]] = {}
EMPTY: dict[str, Any] = {}  # shared by every node that saved nothing
_POOL_LIMIT = 100_000  # a long session with ever-new values must not grow these forever


def shape_tuple(size: torch.Size | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """``tuple(size)``, one shared tuple per distinct shape."""
    key = size if isinstance(size, tuple) else tuple(size)  # metadata shapes are lists
    shape = _shapes.get(key)
    if shape is None:
        shape = tuple(key)  # a torch.Size is a tuple too
        if len(_shapes) < _POOL_LIMIT:
            _shapes[shape] = shape
    return shape


def tensor_meta(tensor: torch.Tensor | None, state: str | None = None) -> dict[str, Any] | None:
    """{"shape", "dtype", "state"} of a tensor, one shared dict per distinct value."""
    if tensor is None:
        return None
    return _shared_meta(tensor.shape, tensor.dtype, state)


def _shared_meta(size: tuple[int, ...], dtype: torch.dtype, state: str | None) -> dict[str, Any]:
    key = (size, dtype, state)
    meta = _metas.get(key)
    if meta is None:
        shape = shape_tuple(size)
        meta = _meta(shape, _dtype_name(dtype), state)
        if len(_metas) < _POOL_LIMIT:
            _metas[(shape, dtype, state)] = meta
    return meta


def _meta(shape, dtype: str | None, state: str | None, hook: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"shape": shape, "dtype": dtype, "state": state}
    if hook is not None:
        meta["hook"] = hook
    return meta


def _unknown_meta(state: str, hook: str | None = None) -> dict[str, Any]:
    """A saved tensor whose shape and dtype cannot be told, one shared dict per state."""
    key = (None, state, hook)
    meta = _metas.get(key)
    if meta is None:
        meta = _meta(None, None, state, hook)
        if len(_metas) < _POOL_LIMIT:
            _metas[key] = meta
    return meta


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def saved_plan(node_type: type):
    """How to read a node type's saved values, worked out once per type from its
    attributes: ``((raw attr, attr, name) per saved tensor, (attr, name, role) per other
    value, the pool of this type's saved descriptions)``, with layout values left out
    (never read); None for a Python Function."""
    plan = _plans.get(node_type, _UNPLANNED)
    if plan is not _UNPLANNED:
        return plan
    if issubclass(node_type, BackwardCFunction):
        _plans[node_type] = None
        return None
    names = dir(node_type)
    tensor_names = [n[len(_RAW):] for n in names if n.startswith(_RAW)]
    tensors = tuple((_RAW + n, _SAVED + n, n) for n in tensor_names)
    others = []
    for attr in names:
        name = attr[len(_SAVED):]
        if not attr.startswith(_SAVED) or name in tensor_names or name.endswith(_LAYOUT):
            continue
        for role in (_SIZES_OPT, _SIZES, _NUMEL):
            if name.endswith(role):
                others.append((attr, name[: -len(role)], role))
                break
        else:
            others.append((attr, name, _ARG))
    plan = _plans[node_type] = (tensors, tuple(others), {})
    return plan


def saved_tensors(fn: Node, tensors, pool, checkpoints: CheckpointRecords | None):
    """The ``saved`` attribute for ``saved_plan``'s tensors."""
    saved = plain_saved(fn, tensors, pool)
    return careful_saved(fn, tensors, checkpoints) if saved is None else saved


def saved_values(fn: Node, others, saved) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(args, input_shapes)`` for ``saved_plan``'s other values."""
    args = []
    shapes: dict[str, Any] = {}
    numels = []
    for attr, name, role in others:
        value = getattr(fn, attr)
        if value is None:  # an input that did not need saving
            continue
        if role is _ARG:
            args.append((name, _readable(name, plain(value))))
        elif role is _NUMEL:
            numels.append((name, plain(value)))
        else:
            _input_shape(name, role, value, saved, shapes)
    for name, value in numels:
        if name not in shapes and not (isinstance(saved, dict) and name in saved):
            args.append((name + _NUMEL, value))
    return _pooled(args, _args_dicts), shapes or EMPTY


def plain_saved(fn: Node, tensors, pool: dict) -> dict[str, Any] | None:
    """The common case, kept tight for deep graphs: no hooks, nothing modified, no tensor
    lists, graph not freed. None when a tensor needs :func:`careful_saved`'s look.

    ``pool`` holds the node type's descriptions by the ids of their metas: a pooled
    description keeps its metas alive, so an id in the pool names one meta.
    """
    try:
        if len(tensors) == 1:  # most nodes that save anything save one tensor
            raw_attr, attr, name = tensors[0]
            if getattr(fn, raw_attr).unpack_hook is not None:  # a tuple for tensor lists
                return None
            value = getattr(fn, attr)  # raises for a change in place, a freed graph
            if value is None:  # an optional tensor that was not given
                return EMPTY
            meta = _metas.get((value.shape, value.dtype, None)) or tensor_meta(value)
            shared = pool.get(id(meta))
            if shared is None:
                shared = {name: meta}
                if len(pool) < _POOL_LIMIT:
                    pool[id(meta)] = shared
            return shared
        metas = []
        for raw_attr, attr, _name in tensors:
            if getattr(fn, raw_attr).unpack_hook is not None:
                return None
            value = getattr(fn, attr)
            metas.append(None if value is None else
                         _metas.get((value.shape, value.dtype, None)) or tensor_meta(value))
    except (RuntimeError, AttributeError):  # AttributeError: a tensor list, an old torch
        return None
    key = tuple(map(id, metas))
    shared = pool.get(key)
    if shared is None:
        shared = {name: meta for (_, _, name), meta in zip(tensors, metas)
                  if meta is not None} or EMPTY
        if len(pool) < _POOL_LIMIT:
            pool[key] = shared
    return shared


def careful_saved(fn: Node, tensors, checkpoints: CheckpointRecords | None):
    """Saved tensors one by one: those behind hooks described from what was packed, those
    modified in place marked, or :data:`FREED` for the whole node."""
    items = []
    try:
        for raw_attr, attr, name in tensors:
            meta = _saved_tensor(fn, raw_attr, attr, checkpoints)
            if meta is not None:
                items.append((name, meta))
    except RuntimeError as error:
        if _FREED_TEXT not in str(error):
            raise
        return FREED
    return _pooled(items, _saved_dicts)


_UNPLANNED = object()
_ARG, _NUMEL, _SIZES, _SIZES_OPT = "arg", "_sym_numel", "_sym_sizes", "_sym_sizes_opt"
_LAYOUT = ("_sym_strides", "_sym_storage_offset")
_plans: dict[type, Any] = {}


def _saved_tensor(fn: Node, raw_attr: str, attr: str, checkpoints: CheckpointRecords | None):
    raw = getattr(fn, raw_attr)
    if isinstance(raw, (tuple, list)):
        if any(_unpack_hook(r) is not None for r in raw):
            return [_held(r, checkpoints) for r in raw]
    elif _unpack_hook(raw) is not None:
        return _held(raw, checkpoints)
    try:
        value = getattr(fn, attr)
    except RuntimeError as error:
        if _IN_PLACE_TEXT not in str(error):
            raise
        if isinstance(raw, (tuple, list)):
            return [_modified(r) for r in raw]
        return _modified(raw)
    if isinstance(value, torch.Tensor):
        return tensor_meta(value)
    if isinstance(value, (tuple, list)):
        return [tensor_meta(v) if isinstance(v, torch.Tensor) else None for v in value]
    return None  # an optional tensor that was not given


def function_saved(fn: BackwardCFunction, checkpoints: CheckpointRecords | None):
    """A Python autograd.Function's ``saved_tensors``, as ``saved_tensors[i]``."""
    try:
        raws = fn._raw_saved_tensors
        if any(_unpack_hook(raw) is not None for raw in raws):
            metas = [_held(raw, checkpoints) for raw in raws]
        else:
            try:
                metas = [tensor_meta(t) for t in fn.saved_tensors]
            except RuntimeError as error:
                if _IN_PLACE_TEXT not in str(error):
                    raise
                # torch unpacks them all at once and names none: mark every one.
                metas = [_modified(raw) for raw in raws]
    except RuntimeError as error:
        if _FREED_TEXT not in str(error):
            raise
        return FREED
    return _pooled([(f"saved_tensors[{i}]", meta) for i, meta in enumerate(metas)],
                   _saved_dicts)


_NO_ATTRIBUTE = object()


def _unpack_hook(raw) -> object | None:
    """The unpack hook of one SavedTensor, or None when unpacking it runs no hook."""
    hook = getattr(raw, "unpack_hook", _NO_ATTRIBUTE)
    if hook is _NO_ATTRIBUTE:  # torch without SavedTensor.unpack_hook: judge by what it holds
        data = raw.data
        return None if data is None or isinstance(data, torch.Tensor) else data
    return hook


def _modified(raw) -> dict[str, Any] | None:
    """A saved tensor changed in place since: described as it is now (``data`` checks no
    version, unlike unpacking)."""
    data = raw.data
    if not isinstance(data, torch.Tensor):
        return _unknown_meta(MODIFIED_IN_PLACE)
    return tensor_meta(data, MODIFIED_IN_PLACE)


def _held(raw, checkpoints: CheckpointRecords | None) -> dict[str, Any]:
    """A saved tensor behind an unpack hook, described from what the hook packed."""
    hook = _unpack_hook(raw)
    packed = raw.data
    if getattr(packed, "holds_saved_tensor", False):
        # gradviz's own box (the watch keeps a graph for a NaN's origin): the tensor
        # itself is in it, so it reads as saved; None once the watch freed it
        tensor = packed.tensor
        return _unknown_meta(FREED) if tensor is None else tensor_meta(tensor)
    if getattr(hook, "__module__", None) == _CHECKPOINT_MODULE:
        record = (checkpoints or CheckpointRecords()).metadata(hook, raw.data)
        if record is None:
            return _unknown_meta(RECOMPUTED)
        return _shared_meta(*record, RECOMPUTED)
    name = f"{getattr(hook, '__module__', '?')}.{getattr(hook, '__qualname__', type(hook).__name__)}"
    return _unknown_meta(HOOKED, name)


class CheckpointRecords:
    """Shape and dtype of tensors packed by ``torch.utils.checkpoint``, from its own records.

    Checkpoint's pack hook keeps a ``_Holder`` per saved tensor and, for its
    determinism check, the tensor's metadata in the frame that both hooks close
    over (``frame.weak_holders[i]`` and ``frame.x_metadatas[i]``). These are
    torch's internals: when they are not as expected, the shape is simply unknown.
    One instance serves one walk and indexes each frame once.
    """

    def __init__(self):
        self._by_frame: dict[int, tuple[object, dict[int, int]]] = {}

    def metadata(self, hook, holder) -> tuple[torch.Size, torch.dtype] | None:
        frame = _closure_value(hook, "frame")
        if frame is None:  # unpack_hook_with_error_cb wraps the hook that holds the frame
            frame = _closure_value(_closure_value(hook, "unpack_hook"), "frame")
        metadatas = getattr(frame, "x_metadatas", None)
        holders = getattr(frame, "weak_holders", None)
        if not isinstance(metadatas, list) or not isinstance(holders, list):
            return None
        entry = self._by_frame.get(id(frame))
        if entry is None or entry[0] is not frame:
            index = {}
            for position, ref in enumerate(holders):
                alive = ref() if callable(ref) else None
                if alive is not None:
                    index[id(alive)] = position
            entry = self._by_frame[id(frame)] = (frame, index)
        position = entry[1].get(id(holder))
        if position is None or position >= len(metadatas):
            return None
        record = metadatas[position]
        if not isinstance(record, dict):
            return None
        shape, dtype = record.get("shape"), record.get("dtype")
        if not isinstance(shape, tuple) or not isinstance(dtype, torch.dtype):
            return None
        return shape, dtype


def _closure_value(function, name: str):
    code = getattr(function, "__code__", None)
    cells = getattr(function, "__closure__", None)
    if code is None or not cells or name not in code.co_freevars:
        return None
    try:
        return cells[code.co_freevars.index(name)].cell_contents
    except ValueError:  # an empty cell
        return None


def _input_shape(name: str, role: str, value, saved, shapes: dict[str, Any]) -> None:
    if isinstance(saved, dict) and name in saved:
        return  # the tensor itself is saved: its shape is there
    shape = plain(value)
    if not isinstance(shape, tuple):
        return
    if role is _SIZES_OPT and shape == (0,):
        return  # an optional input (a convolution's bias) that was not given
    shapes[name] = shape_tuple(shape)


def _readable(name: str, value):
    """A saved value as a person means it: signed int64s, a loss's reduction by name."""
    value = _signed(value)
    if name == "reduction" and isinstance(value, int) and value in _REDUCTIONS:
        return _REDUCTIONS[value]
    return value


def _signed(value):
    """torch hands some int64 values to Python as uint64: -100 arrives as 2**64 - 100."""
    if isinstance(value, int) and not isinstance(value, bool) and value > _INT64_MAX:
        return value - _UINT64 if value < _UINT64 else value
    if isinstance(value, tuple):
        return tuple(_signed(v) for v in value)
    return value


def _pooled(items: list[tuple[str, Any]], pool: dict[tuple, dict[str, Any]]) -> dict[str, Any]:
    """``dict(items)``, one shared dict per distinct description.

    Metas are compared by identity (equal metas are one shared object; a pooled dict
    keeps its metas alive, so an id is not reused while its key is in the pool); other
    values by ``repr``, so that 1, 1.0 and True stay apart.
    """
    if not items:
        return EMPTY
    if any(isinstance(v, list) for _, v in items):  # tensor lists: rare, and new each time
        return dict(items)
    key = tuple(part for name, v in items
                for part in (name, id(v) if isinstance(v, dict) else repr(v)))
    shared = pool.get(key)
    if shared is None:
        shared = dict(items)
        if len(pool) < _POOL_LIMIT:
            pool[key] = shared
    return shared
