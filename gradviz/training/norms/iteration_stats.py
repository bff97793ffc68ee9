"""What one training iteration did to each parameter, measured cheaply enough to leave on.

Per parameter: the gradient norm (exact: every element is read, so a single NaN is
seen), and the parameter's norm before ``optimizer.step()`` and the norm of the
update that step made (after - before, measured, never derived from a formula).

The cost is kept to a few fused kernels per (device, dtype) group, whatever the
number of parameters, and one host sync per read:

- gradient norms: ``torch._foreach_norm`` over the group's gradients;
- parameter and update norms: a parameter of up to ``sample`` elements is copied
  whole; a larger one through a fixed sample of its memory, ``isqrt(sample)`` blocks
  of ``isqrt(sample)`` contiguous elements at a prime stride (so the blocks do not
  line up with a weight's rows or kernels), and its norms are scaled up by
  ``sqrt(numel / sampled)``. One ``_foreach_copy_`` before the step and one after fill
  two flat buffers; a subtraction and two ``_foreach_norm`` give every parameter's
  norms (an ``index_add_`` of the squares took 2.4x as long on a CPU: it is serial). ``sample=None`` copies every parameter whole (exact, at the
  cost of a copy of the model per step).

Copying whole parameters before every step costs 14% of a resnet18 batch-8 iteration
on a CPU (64x64 inputs); the sample costs under 1%, and the |update|/|param| ratio
it estimates is what the audits compare against a band an order of magnitude wide.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

#: Elements per parameter measured whole; a larger parameter is sampled.
DEFAULT_SAMPLE = 4096
_HALF = (torch.float16, torch.bfloat16)


@dataclass
class Measurement:
    """One iteration's numbers as plain floats, in the tracked parameters' order."""

    loss: float | None  # None: no backward gave a scalar loss
    grad_norms: list[float | None]  # None: no gradient; as backward made them (before clipping)
    param_norms: list[float] | None = None  # before the step; None until read
    update_norms: list[float] | None = None
    clipped_norms: list[float | None] | None = None  # what the step saw, when the loop clipped
    #: Why these are one rank's shards only ('' where the numbers are whole): see
    #: :mod:`gradviz.training.norms.sharded`, whose ranks combine theirs.
    not_combined: str = ""

    @property
    def shared_loss(self) -> float | None:
        """The loss that breaks are decided on: the same on every rank that decides (one
        process: its own; a sharded model: the mean of the ranks' losses)."""
        return self.loss

    @property
    def nonfinite_where(self) -> str:
        """Which ranks held a NaN/Inf, in words to add to the event ('' in one process)."""
        return ""

    @property
    def overflow_only(self) -> bool | None:
        """Whether the NaN/Inf norms are only overflows of finite gradients, when the
        measurement knows (a sharded one: every rank's verdict); None: read the gradients."""
        return None


class _Group:
    """The parameters of one (device, dtype): their samples and two flat buffers."""

    def __init__(self, indices: list[int], views: list[torch.Tensor], scales: list[float],
                 device: torch.device, dtype: torch.dtype):
        self.indices = indices
        self.views = views
        self.scales = scales
        sizes = [v.numel() for v in views]
        self.before = torch.empty(sum(sizes), dtype=dtype, device=device)
        self.after = torch.empty_like(self.before)
        self.before_slices = _slices(self.before, views, sizes)
        self.after_slices = _slices(self.after, views, sizes)
        self.sizes = sizes
        self.before_flat = list(self.before.split(sizes))
        self.param_norms: torch.Tensor | None = None
        self.update_norms: torch.Tensor | None = None


def _slices(buffer: torch.Tensor, views: list[torch.Tensor], sizes: list[int]):
    out, start = [], 0
    for view, size in zip(views, sizes):
        out.append(buffer[start:start + size].view(view.shape))
        start += size
    return out


class IterationStats:
    """Measures ``params`` around each ``optimizer.step()``; see the module docstring.

    Call :meth:`add_loss` per backward, :meth:`before_step` and :meth:`after_step`
    around the step, then :meth:`read` (one host sync per device); :meth:`read_grads`
    reads the loss and gradient norms early (before the step, to break on them).
    """

    def __init__(self, params: Sequence[torch.Tensor], *, sample: int | None = DEFAULT_SAMPLE):
        self.sample = sample
        self._groups: list[_Group] = []
        self._pointers: tuple = ()
        self._by_device: dict[torch.device, list[int]] = {}
        self._losses: dict[torch.device, torch.Tensor] = {}
        self._grad_norms: list[tuple[torch.device, list[int], torch.Tensor]] = []
        # Clipping: the norms read just before the loop changed its gradients, and how it
        # changed them (a coefficient per parameter, or "read them again").
        self._before_clip: list[tuple[torch.device, list[int], torch.Tensor]] | None = None
        self._clip_coefficients: dict[int, torch.Tensor] = {}
        self._clip_unknown = False
        self._clipped_norms: list[tuple[torch.device, list[int], torch.Tensor]] = []
        self._grads_read: Measurement | None = None
        self._stepped = False
        self.set_params(params)

    def set_params(self, params: Sequence[torch.Tensor]) -> None:
        """Measure these parameters from the next step on (the loss so far is kept)."""
        self.params = list(params)
        self._position = {id(p): i for i, p in enumerate(self.params)}
        self.sampled = [False] * len(self.params)
        self._build()

    # ------------------------------------------------------------ per backward
    def add_loss(self, value: torch.Tensor) -> None:
        """Add a backward's loss (a 0-d tensor; no sync) to this iteration's."""
        value = value.detach().double()
        previous = self._losses.get(value.device)
        self._losses[value.device] = value if previous is None else previous + value

    def backward_ran(self) -> None:
        """A backward added to the gradients: what was read before a clip is of the past."""
        self._before_clip = None
        self._clip_coefficients = {}
        self._clip_unknown = False

    # ---------------------------------------------------------- clipping
    def grads_will_change(self) -> None:
        """The loop is about to clip its gradients: read their norms as backward made them
        (no sync), once until the next backward."""
        if self._before_clip is None:
            self._before_clip = self._launch_grad_norms()

    def clipped_by(self, params, coefficient: torch.Tensor) -> None:
        """``clip_grad_norm_`` scaled these parameters' gradients by ``coefficient`` (a
        0-d tensor): their norms after the clip are the ones before, times it (times
        every earlier clip's since the last backward: a loop may clip twice)."""
        for param in params:
            position = self._position.get(id(param))
            if position is not None:
                earlier = self._clip_coefficients.get(position)
                self._clip_coefficients[position] = (coefficient if earlier is None
                                                     else earlier * coefficient)

    def clipped_otherwise(self) -> None:
        """Clipped by value (or another way): the norms after it are read again."""
        self._clip_unknown = True

    # ---------------------------------------------------------- around a step
    def before_step(self) -> None:
        """Launch the gradient norms and copy the parameters' samples (no sync)."""
        self.snapshot_params()
        self.launch_grads()

    def snapshot_params(self) -> None:
        """Copy the parameters' samples, as they are before the update (no sync)."""
        if self._pointers != tuple(self._local(p).data_ptr() for p in self.params):
            self._build()  # a parameter got new storage (module.to(), p.data = ...)
        with torch.no_grad():
            for group in self._groups:
                torch._foreach_copy_(group.before_slices, group.views)
        self._stepped = False

    def launch_grads(self) -> None:
        """Launch the gradient norms (no sync): as backward made them, and after a clip."""
        self._clipped_norms = []
        if self._before_clip is None:
            self._grad_norms = self._launch_grad_norms()
        else:  # the norms of record are those from before the clip
            self._grad_norms = self._before_clip
            if self._clip_unknown:
                self._clipped_norms = self._launch_grad_norms()
            else:
                self._clipped_norms = self._scaled_norms(self._before_clip)
        self._grads_read = None
        self._before_clip = None
        self._clip_coefficients = {}
        self._clip_unknown = False

    def _scaled_norms(self, norms):
        """Each parameter's norm after a clip by norm: before, times its coefficient."""
        scaled = []
        for device, indices, values in norms:
            factors = [self._clip_coefficients.get(i) for i in indices]
            if any(f is not None for f in factors):
                ones = torch.ones((), dtype=values.dtype, device=device)
                values = values * torch.stack([ones if f is None else f.to(device, values.dtype)
                                               for f in factors])
            scaled.append((device, indices, values))
        return scaled

    def _launch_grad_norms(self) -> list[tuple[torch.device, list[int], torch.Tensor]]:
        """Every gradient's norm as a device tensor, per (device, half): no sync."""
        by_key: dict[tuple, tuple[list[int], list[torch.Tensor]]] = {}
        sparse: list[tuple[int, torch.Tensor]] = []
        for index, param in enumerate(self.params):
            grad = param.grad
            if grad is None:
                continue
            grad = self._local(grad)
            if grad.is_sparse:
                sparse.append((index, grad))
                continue
            indices, grads = by_key.setdefault((grad.device, grad.dtype in _HALF), ([], []))
            indices.append(index)
            grads.append(grad)
        launched = []
        with torch.no_grad():
            for (device, half), (indices, grads) in by_key.items():
                # half-precision norms in float32: a finite gradient must not read as Inf
                norms = torch._foreach_norm(grads, 2, dtype=torch.float32 if half else None)
                launched.append((device, indices, torch.stack(norms).double()))
            for index, grad in sparse:  # rare: nn.Embedding(sparse=True)
                values = grad.coalesce().values().double()
                launched.append(
                    (values.device, [index], torch.linalg.vector_norm(values).reshape(1)))
        return launched

    def after_step(self) -> None:
        """Copy the samples again and launch the parameter and update norms (no sync)."""
        with torch.no_grad():
            self._update_norms()
        self._stepped = True

    def _update_norms(self) -> None:
        for group in self._groups:
            torch._foreach_copy_(group.after_slices, group.views)
            # half precision: the update and the norms in float32, as the gradients'
            half = group.before.dtype in _HALF
            dtype = torch.float32 if half else None
            delta = (group.after.float() - group.before.float() if half
                     else group.after - group.before).split(group.sizes)
            group.param_norms = torch.stack(torch._foreach_norm(group.before_flat, 2, dtype=dtype))
            group.update_norms = torch.stack(torch._foreach_norm(delta, 2, dtype=dtype))

    # ------------------------------------------------------------------ reads
    def read_local_grads(self) -> Measurement:
        """:meth:`read_grads` from what this process holds, at a point only it reaches (the
        early check between micro-batches, on the rank that keeps graphs): the same here;
        a sharded model's subclass does not combine the ranks' shards there."""
        return self.read_grads()

    def read_grads(self) -> Measurement:
        """The loss and gradient norms so far (one sync per device); no parameter norms."""
        if self._grads_read is None:
            values = self._fetch(with_params=False)
            self._grads_read = Measurement(values["loss"], values["grads"],
                                           clipped_norms=values.get("clipped"))
        return self._grads_read

    def read(self) -> Measurement:
        """Everything measured this iteration (one sync per device), and reset for the next."""
        early = self._grads_read
        values = self._fetch(with_params=self._stepped, with_grads=early is None)
        measurement = Measurement(
            early.loss if early is not None else values["loss"],
            early.grad_norms if early is not None else values["grads"],
            values.get("params"), values.get("updates"),
            early.clipped_norms if early is not None else values.get("clipped"))
        self._next_iteration()
        return measurement

    def _next_iteration(self) -> None:
        """Forget what this iteration measured."""
        self._losses = {}
        self._grad_norms = []
        self._clipped_norms = []
        self._grads_read = None
        self._stepped = False
        for group in self._groups:
            group.param_norms = group.update_norms = None

    # -------------------------------------------------------------- internals
    def _fetch(self, *, with_params: bool, with_grads: bool = True) -> dict:
        """One ``cat`` and ``tolist()`` per device: the only host syncs of an iteration."""
        parts: dict[torch.device, list[torch.Tensor]] = {}
        layout: list[tuple] = []
        for device, loss in self._losses.items():
            parts.setdefault(device, []).append(loss.reshape(1))
            layout.append(("loss", device, None))
        if with_grads:
            for device, indices, norms in self._grad_norms:
                parts.setdefault(device, []).append(norms)
                layout.append(("grads", device, indices))
            for device, indices, norms in self._clipped_norms:
                parts.setdefault(device, []).append(norms)
                layout.append(("clipped", device, indices))
        if with_params:
            for group in self._groups:
                device = group.before.device
                parts.setdefault(device, []).extend(
                    [group.param_norms.double(), group.update_norms.double()])
                layout.append(("params", device, group))
        numbers = {device: torch.cat(tensors).tolist() for device, tensors in parts.items()}
        offsets = dict.fromkeys(numbers, 0)

        def take(device, count):
            start = offsets[device]
            offsets[device] = start + count
            return numbers[device][start:start + count]

        count = len(self.params)
        loss = None if not self._losses else 0.0
        grads: list[float | None] = [None] * count
        clipped: list[float | None] | None = [None] * count if self._clipped_norms else None
        params: list[float] = [math.nan] * count
        updates: list[float | None] = [None] * count
        for kind, device, detail in layout:
            if kind == "loss":
                loss += take(device, 1)[0]
            elif kind == "grads":
                for index, norm in zip(detail, take(device, len(detail))):
                    grads[index] = norm
            elif kind == "clipped":
                for index, norm in zip(detail, take(device, len(detail))):
                    clipped[index] = norm
            else:
                group = detail
                n = len(group.indices)
                param_norms, update_norms = take(device, n), take(device, n)
                for index, scale, p_norm, u_norm in zip(group.indices, group.scales,
                                                        param_norms, update_norms):
                    params[index] = p_norm * scale
                    updates[index] = u_norm * scale
        values = {"loss": loss, "grads": grads, "clipped": clipped}
        if with_params:
            values.update(params=params, updates=updates)
        return values

    def _build(self) -> None:
        """Group the parameters by (device, dtype) and choose each one's sample."""
        keyed: dict[tuple, tuple[list[int], list[torch.Tensor], list[float]]] = {}
        for index, param in enumerate(self.params):
            view, scale = _sample_view(self._local(param.detach()), self.sample)
            self.sampled[index] = scale != 1.0
            indices, views, scales = keyed.setdefault((param.device, param.dtype), ([], [], []))
            indices.append(index)
            views.append(view)
            scales.append(scale)
        self._groups = [_Group(indices, views, scales, device, dtype)
                        for (device, dtype), (indices, views, scales) in keyed.items()]
        self._pointers = tuple(self._local(p).data_ptr() for p in self.params)

    @staticmethod
    def _local(tensor: torch.Tensor) -> torch.Tensor:
        """The elements this process holds of ``tensor``: all of them (a sharded model's
        subclass reads a DTensor's local shard)."""
        return tensor


def _sample_view(param: torch.Tensor, sample: int | None) -> tuple[torch.Tensor, float]:
    """A view of ``param``'s memory to copy, and the factor that scales its norms up."""
    numel = param.numel()
    dense = param.is_contiguous() or (
        param.dim() == 4 and param.is_contiguous(memory_format=torch.channels_last))
    if sample is None or numel <= sample or not dense:
        return param, 1.0
    side = max(1, math.isqrt(sample))
    widest = (numel - side) // max(1, side - 1)  # the last block ends inside the tensor
    stride = _prime_at_most(widest)
    if stride < side:  # blocks must not overlap
        stride = widest
    view = param.as_strided((side, side), (stride, 1), param.storage_offset())
    return view, math.sqrt(numel / (side * side))


def _prime_at_most(n: int) -> int:
    """The largest prime <= n (n itself if n < 2)."""
    candidate = n
    while candidate >= 2:
        if all(candidate % d for d in range(2, math.isqrt(candidate) + 1)):
            return candidate
        candidate -= 1
    return max(n, 1)
