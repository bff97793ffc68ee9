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
