"""How the watch sees the user's loop without changing it: ``torch.autograd.backward``,
``Tensor.backward``, a ``GradScaler``'s ``scale`` and ``step`` and ``SIGUSR1`` go through it
while it is active. Each ``install_*`` returns the undo that puts the original back.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

import torch

Undo = Callable[[], None]


def install_backward(watch) -> list[Undo]:
    """``torch.autograd.backward`` and ``Tensor.backward`` through ``watch``."""
    import torch.autograd as autograd

    original_backward = autograd.backward
    original_tensor_backward = torch.Tensor.backward
    watch.original_backward = original_backward

    def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False,
                 grad_variables=None, inputs=None):
        if grad_variables is not None and grad_tensors is None:
            grad_tensors = grad_variables
        return watch.watched_backward(tensors, grad_tensors, retain_graph, create_graph, inputs)

    def tensor_backward(self, gradient=None, retain_graph=None, create_graph=False,
                        inputs=None):
        if torch.overrides.has_torch_function_unary(self):  # a subclass's own backward
            return original_tensor_backward(self, gradient, retain_graph, create_graph, inputs)
        return watch.watched_backward(self, gradient, retain_graph, create_graph, inputs)

    for wrapper, original in ((backward, original_backward),
                              (tensor_backward, original_tensor_backward)):
        wrapper.__wrapped__ = original
        wrapper.__doc__ = original.__doc__
    autograd.backward = backward
    torch.Tensor.backward = tensor_backward
    return [lambda: setattr(autograd, "backward", original_backward),
            lambda: setattr(torch.Tensor, "backward", original_tensor_backward)]


def install_grad_scaler(watch) -> list[Undo]:
    """Note which tensor a GradScaler scaled (the loss is recorded unscaled), and end
    the iteration whose step it skips for Inf/NaN gradients."""
    scaler_class = torch.amp.GradScaler
    original_scale, original_step = scaler_class.scale, scaler_class.step

    def scale(scaler, outputs):
        scaled = original_scale(scaler, outputs)
        if isinstance(scaled, torch.Tensor) and scaler.is_enabled():
            watch.scaled(scaled, scaler)
        return scaled

    def step(scaler, optimizer, *args, **kwargs):
        steps = watch.steps_seen
        result = original_step(scaler, optimizer, *args, **kwargs)
        if optimizer is watch.optimizer and watch.steps_seen == steps:
            watch.step_skipped()  # the scaler found Inf/NaN gradients and did not step
        return result

    scale.__wrapped__, step.__wrapped__ = original_scale, original_step
    scaler_class.scale, scaler_class.step = scale, step

    def restore():
        scaler_class.scale, scaler_class.step = original_scale, original_step

    return [restore]


def install_signal(watch, *, take_over: bool) -> list[Undo]:
    """``kill -USR1 PID`` asks ``watch`` to break at the next backward: only while the
    program has no SIGUSR1 handler of its own, or always with ``take_over``."""
    usr1 = getattr(signal, "SIGUSR1", None)
    if usr1 is None or threading.current_thread() is not threading.main_thread():
        return []
    previous = signal.getsignal(usr1)
    if not take_over and previous not in (signal.SIG_DFL, None):
        return []  # the program handles SIGUSR1 itself (a SLURM requeue, say)

    def on_signal(signum, frame):
        watch.signalled()

    signal.signal(usr1, on_signal)
    return [lambda: signal.signal(usr1, previous)]


def install_clipping(watch) -> list[Undo]:
    """Clipping changes the gradients between backward and the step: read their norms just
    before it (the norm of record is the one backward made, as ``clip_grad_norm_`` returns
    it and the trainers log it), and learn how it scaled them.

    ``clip_grad_norm_`` calls ``_clip_grads_with_norm_`` of its own module (torch 2.6 on),
    which is patched there, so a loop that bound ``clip_grad_norm_`` at import time is seen
    too; the public names are patched as well, for ``clip_grad_value_`` and older torch.
    """
    from torch.nn.utils import clip_grad as module

    undo: list[Undo] = []
    inner = getattr(module, "_clip_grads_with_norm_", None)
    if inner is not None:
        def clip_grads_with_norm_(parameters, max_norm, total_norm, foreach=None):
            parameters = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
            watch.clipping()
            # torch's own factor, so the norms after the clip are the ones before times it
            coefficient = torch.clamp(max_norm / (total_norm.detach().double() + 1e-6), max=1.0)
            watch.clipped_by_norm(parameters, coefficient)
            return inner(parameters, max_norm, total_norm, foreach)

        clip_grads_with_norm_.__wrapped__ = inner
        # clip_grad_norm_ calls it by its module's name; accelerate (the transformers
        # Trainer) and FSDP loops call torch.nn.utils.clip_grads_with_norm_, the same one
        for owner, name in ((module, "_clip_grads_with_norm_"),
                            (torch.nn.utils, "clip_grads_with_norm_")):
            if getattr(owner, name, None) is inner:
                setattr(owner, name, clip_grads_with_norm_)
                undo.append(lambda owner=owner, name=name: setattr(owner, name, inner))

    def wrap(owner, name: str, by_norm: bool) -> None:
        original = getattr(owner, name, None)
        if original is None or getattr(original, "__gradviz_clip__", False):
            return

        def clip(parameters, *args, **kwargs):
            if isinstance(parameters, torch.Tensor):
                parameters = [parameters]
            elif not isinstance(parameters, (list, tuple)):
                parameters = list(parameters)  # a generator must not be used up here
            watch.clipping()
            if not by_norm:
                watch.clipped_otherwise()
            elif inner is None:  # older torch: no coefficient to learn; read them again
                watch.clipped_otherwise()
            return original(parameters, *args, **kwargs)

        clip.__wrapped__ = original
        clip.__gradviz_clip__ = True
        clip.__doc__ = original.__doc__
        setattr(owner, name, clip)
        undo.append(lambda: setattr(owner, name, original))

    for owner in (module, torch.nn.utils):
        wrap(owner, "clip_grad_value_", by_norm=False)
        wrap(owner, "clip_grad_norm_", by_norm=True)
    return undo


def install_registration(watch) -> list[Undo]:
    """Tell ``watch`` when a parameter or a module is assigned to any module (torch's
    global registration hooks): a layer replaced mid-run is seen at the next step, and
    the model's parameters are not walked at every step to find out."""
    from torch.nn.modules import module

    handles = [module.register_module_parameter_registration_hook(
                   lambda *args: watch.registered()),
               module.register_module_module_registration_hook(
                   lambda *args: watch.registered())]
    return [handle.remove for handle in handles]
