"""The names the user wrote, inside what distributed training and compilers wrap around them.

A record names the model's class and its parameters as the user's code does:

- DDP and DataParallel wrap the model (``module.``) and ``torch.compile`` does too
  (``_orig_mod.``): the watch reads names from the module inside them;
- FSDP2's ``fully_shard`` adds no wrapper but swaps the module's class for a subclass
  made on the spot (``TinyNet`` becomes ``FSDPTinyNet``, an ``FSDPModule``): the record
  names the user's class, the first of the MRO that torch did not make;
- wrappers applied to a block, not the model, leave their prefix in the middle of a
  name: ``checkpoint_wrapper`` (``blocks.0._checkpoint_wrapped_module.fc1.weight``) and
  ``torch.compile`` of one block (``blocks.0._orig_mod.fc1.weight``): those segments go.
"""

from __future__ import annotations

import torch

#: Name segments that wrappers of a block put inside parameter names.
WRAPPER_SEGMENTS = ("_checkpoint_wrapped_module", "_orig_mod")


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


def user_class_name(model: torch.nn.Module) -> str:
    """The class the user wrote: past the subclass ``fully_shard`` made for it."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch without FSDP2
        return type(model).__name__
    for cls in type(model).__mro__:
        if not issubclass(cls, FSDPModule):
            return cls.__name__
    return type(model).__name__


def user_name(name: str) -> str:
    """A parameter's or module's name without the segments block wrappers put in it."""
    if not any(segment in name for segment in WRAPPER_SEGMENTS):
        return name
    return ".".join(part for part in name.split(".") if part not in WRAPPER_SEGMENTS)
