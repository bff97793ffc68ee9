"""The watch's numbers for a sharded model: norms of whole parameters, from every rank's shards.

FSDP2's ``fully_shard`` (and DTensor parameters generally) leaves each rank a shard
of every parameter and of its gradient; a norm read on one rank is that shard's. What
the record holds is the whole parameter's, as an unsharded run of the same model and
batches would record it (measured on 2 ranks: gradient norms within 1.4e-6 relative in
float32, 6e-6 for an update, whose float32 subtraction rounds; 1e-14 in float64):

- each rank reads its shards as :class:`~gradviz.training.norms.iteration_stats.IterationStats`
  reads a whole model (``_foreach_norm`` over the gradients, the fixed sample of each
  larger parameter copied before and after the step), on the DTensors' local tensors;
  a sampled shard is scaled by its own ``numel / sampled``, so the sum over ranks of
  the estimates estimates the whole;
- the sums of squares, in float64, are added up over the ranks that hold the shards
  (:mod:`gradviz.training.norms.rank_sums`: one ``all_reduce`` of a few kB per iteration on
  FSDP2; one more with a ``"nonfinite"`` or ``"spike"`` break, whose gradients are
  combined before the step), then square-rooted;
- the same vector carries what every rank must agree on, so that each one's record
  tells the same story: the mean of the ranks' losses (the loss breaks are decided on;
  each rank records its own), which ranks' loss was NaN/Inf, which ranks' shards held a
  NaN/Inf gradient (the event says so on every rank), and whether a NaN/Inf norm is only
  an overflow of finite elements.

Where the ranks cannot be met (one left the loop, or does not watch) a rank records its
own shards, flagged, with the reason once: the watch never raises into the loop.

Tested: FSDP2 on one mesh and HSDP, on gloo. Not handled: a gradient left ``Partial``
(unreduced, as tensor parallelism can leave one) is read as this rank's part; making it
whole is a collective, which only the combined reads could run.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from gradviz.training.norms.iteration_stats import DEFAULT_SAMPLE, IterationStats, Measurement
from gradviz.training.norms.rank_sums import RankSums

#: What the watch says where it would step a sharded model's graph again (the NaN
#: origin's backward re-step, the app on a break).
NOT_STEPPED = ("not stepped again: the model is sharded (FSDP/DTensor), and its backward "
               "would run the gradient collectives on this rank alone")

# The vector a read adds up: blocks of one value per parameter, then the values the
# ranks agree on (after the blocks).
_GRAD, _HAS, _CLIPPED = 0, 1, 2  # a gradient read
_PARAM, _UPDATE = 0, 1  # a step's sums, after the gradients' blocks when read together


def is_dtensor(tensor) -> bool:
    """Whether ``tensor`` is a DTensor (without importing torch.distributed.tensor where
    nothing has: then none exists)."""
    module = sys.modules.get("torch.distributed.tensor")
    dtensor = getattr(module, "DTensor", None)
    return dtensor is not None and isinstance(tensor, dtensor)


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether ``model``'s parameters are DTensors (FSDP2, tensor parallel)."""
    return any(is_dtensor(p) for p in model.parameters())


def iteration_stats_for(params: Iterable[torch.Tensor], *, sample: int | None = DEFAULT_SAMPLE,
                        checks_before_step: bool) -> IterationStats:
    """The stats that measure ``params``: :class:`ShardedIterationStats` where any is a
    DTensor in a ``torch.distributed`` job, else the one-process kind.
    ``checks_before_step``: the watch reads the gradients before the step on every
    step (a NaN/spike break): they are combined then (see :meth:`~ShardedIterationStats.
    read_grads`); the watch's arguments must be the same on every rank."""
    import torch.distributed as dist

    params = list(params)
    if dist.is_available() and dist.is_initialized() and any(map(is_dtensor, params)):
        return ShardedIterationStats([], sample=sample, checks_before_step=checks_before_step)
    return IterationStats([], sample=sample)


@dataclass
class ShardedMeasurement(Measurement):
    """A :class:`Measurement` of whole parameters from every rank's shards, with what the
    ranks agree on."""

    loss_mean: float | None = None  # the mean of the ranks' losses (this rank's if local)
    loss_ranks: tuple[int, ...] = ()  # ranks whose loss was NaN/Inf
    grad_ranks: tuple[int, ...] = ()  # ranks whose shards held a NaN/Inf gradient
    overflow: bool = False  # every NaN/Inf norm is an overflow of finite elements

    @property
    def shared_loss(self) -> float | None:
        return self.loss_mean

    @property
    def nonfinite_where(self) -> str:
        shards = f"in the shards of {_ranks(self.grad_ranks)}" if self.grad_ranks else ""
        if self.loss_ranks:
            return f" on {_ranks(self.loss_ranks)}" + (f"; gradients NaN/Inf {shards}"
                                                         if shards else "")
        return f" {shards}" if shards else ""

    @property
    def overflow_only(self) -> bool | None:
        return self.overflow


class ShardedIterationStats(IterationStats):
    """:class:`IterationStats` over the local shards, their sums added up over the ranks.

    Which reads combine, so that every rank makes the same calls in the same order:
    :meth:`read` always (after the step, or where the watch ends an iteration without
    one); :meth:`read_grads` when ``checks_before_step`` (then :meth:`read` adds up the
    step's sums only), else it is this rank's own (a GradScaler's skipped step, whose
    :meth:`read` combines); :meth:`read_local_grads` never.
    """

    def __init__(self, params: Sequence[torch.Tensor], *, sample: int | None = DEFAULT_SAMPLE,
                 checks_before_step: bool = False):
        import torch.distributed as dist

        self.checks_before_step = checks_before_step
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.sums = RankSums()
        self._said = False
        self._combined_grads: tuple[list[float], list[float]] | None = None
        super().__init__(params, sample=sample)

    @staticmethod
    def _local(tensor: torch.Tensor) -> torch.Tensor:
        if not is_dtensor(tensor):
            return tensor
        # The DTensor's own local tensor: to_local() makes a view of a parameter's (and,
        # with grad on, goes through an autograd Function): 5 to 7 us a call, against
        # 0.3 us, and the watch reads every parameter's twice per iteration.
        local = getattr(tensor, "_local_tensor", None)
        if local is None:
            with torch.no_grad():
                local = tensor.to_local()
        return local

    def _build(self) -> None:
        super()._build()
        self.sampled = [_sampled_somewhere(p, self.sample) for p in self.params]
        self._indices = [torch.tensor(g.indices, device=g.before.device) for g in self._groups]
        self._scales_sq = [torch.tensor([s * s for s in g.scales], dtype=torch.float64,
                                        device=g.before.device) for g in self._groups]
        buckets: dict[tuple, list[int]] = {}
        for index, param in enumerate(self.params):
            buckets.setdefault(_shard_ranks(param), []).append(index)
        self.sums.set_buckets([(indices, list(ranks)) for ranks, indices in buckets.items()])

    def clipped_by(self, params, coefficient: torch.Tensor) -> None:
        if is_dtensor(coefficient):  # torch's total norm is a DTensor here: every rank's
            coefficient = coefficient.full_tensor()
        super().clipped_by(params, coefficient)

    # ------------------------------------------------------------------ reads
    def launch_grads(self) -> None:
        super().launch_grads()
        self._combined_grads = None

    def read_local_grads(self) -> Measurement:
        values, loss = self._local_values(grads=True, step=False)
        return self._measurement(values.tolist(), self._extras(values, loss).tolist(), loss,
                                 step=False, not_combined="read early, on this rank alone")

    def read_grads(self) -> Measurement:
        if not self.checks_before_step:
            return self.read_local_grads()
        if self._grads_read is None:
            values, loss = self._local_values(grads=True, step=False)
            vector = torch.cat([values, self._extras(values, loss)])
            combined = self.sums.add_up(vector, count=len(self.params), blocks=3)
            numbers = vector.tolist()
            split = values.numel()
            self._combined_grads = (numbers[:split], numbers[split:])
            self._grads_read = self._measurement(numbers[:split], numbers[split:], loss,
                                                 step=False,
                                                 not_combined="" if combined else self._why())
        return self._grads_read

    def read(self) -> Measurement:
        early = self._combined_grads
        values, loss = self._local_values(grads=early is None, step=True)
        if early is None:
            vector = torch.cat([values, self._extras(values, loss)])
        else:
            vector = values
        blocks = 2 if early is not None else 5
        combined = self.sums.add_up(vector, count=len(self.params), blocks=blocks)
        numbers = vector.tolist()
        split = values.numel()
        if early is not None:
            numbers, extras = early[0] + numbers, early[1]
            combined = combined and not self._grads_read.not_combined
        else:
            numbers, extras = numbers[:split], numbers[split:]
        measurement = self._measurement(numbers, extras, loss, step=self._stepped,
                                        not_combined="" if combined else self._why())
        self._combined_grads = None
        self._next_iteration()
        return measurement

    # -------------------------------------------------------------- internals
    def _why(self) -> str:
        why = self.sums.failed or "the ranks' sums could not be added up"
        if not self._said:  # once: the record says it at that iteration, and every row
            self._said = True
            print(f"gradviz: rank {self.rank}: norms of this rank's shards only from here "
                  f"on: {why}", file=sys.stderr, flush=True)
        return why

    def _local_values(self, *, grads: bool, step: bool) -> tuple[torch.Tensor, list[float]]:
        """This rank's sums of squares on the host (float64): the gradient blocks
        (``grads``), then the step's (``step``: zeros where no step was taken, so that
        every rank adds up as many values); and its loss and whether it has one."""
        count = len(self.params)
        size = ((3 if grads else 0) + (2 if step else 0)) * count
        by_device: dict[torch.device, torch.Tensor] = {}

        def vector(device) -> torch.Tensor:
            if device not in by_device:  # the loss and whether there is one at the end
                by_device[device] = torch.zeros(size + 2, dtype=torch.float64, device=device)
            return by_device[device]

        with torch.no_grad():
            if grads:
                for block, launched in ((_GRAD, self._grad_norms),
                                        (_CLIPPED, self._clipped_norms)):
                    for device, indices, norms in launched:
                        slots = torch.tensor(indices, device=device)
                        target = vector(device)
                        target.index_copy_(0, slots + block * count, norms.double().square())
                        if block == _GRAD:
                            target.index_fill_(0, slots + _HAS * count, 1.0)
            for device, loss in self._losses.items():
                target = vector(device)
                target[-2] += loss.reshape(())
                target[-1] = 1.0
            if step and self._stepped:
                start = (3 if grads else 0) * count
                for group, slots, scales_sq in zip(self._groups, self._indices,
                                                   self._scales_sq):
                    target = vector(slots.device)
                    target.index_copy_(0, slots + start + _PARAM * count,
                                       group.param_norms.double().square() * scales_sq)
                    target.index_copy_(0, slots + start + _UPDATE * count,
                                       group.update_norms.double().square() * scales_sq)
        if not by_device:
            vector(torch.device("cpu"))
        values = sum(v.cpu() for v in by_device.values())  # the iteration's host sync
        return values[:-2], values[-2:].tolist()

    def _extras(self, values: torch.Tensor, loss: list[float]) -> torch.Tensor:
        """What the ranks agree on, as this rank sees it: its loss and whether it has one,
        then a slot per rank of the job: its loss was NaN/Inf, and its shards held a
        NaN/Inf gradient (an overflow of finite elements is not one). ``values``: the
        gradient blocks first."""
        count = len(self.params)
        flags = torch.zeros(2 * self.world + 2, dtype=torch.float64)
        flags[0], flags[1] = loss
        if loss[1] and not math.isfinite(loss[0]):
            flags[2 + self.rank] = 1.0
        sums = values[_GRAD * count:(_GRAD + 1) * count]
        has = values[_HAS * count:(_HAS + 1) * count]
        bad = ((~torch.isfinite(sums)) & (has > 0)).nonzero().flatten().tolist()
        if any(not self._finite_elements(i) for i in bad):
            flags[2 + self.world + self.rank] = 1.0
        return flags

    def _finite_elements(self, index: int) -> bool:
        """Whether this rank's shard of a gradient whose norm is NaN/Inf holds finite
        elements only (too large to square in its dtype): read only for such a one."""
        grad = self.params[index].grad
        if grad is None:
            return True
        with torch.no_grad():
            return bool(torch.isfinite(self._local(grad)).all())

    def _measurement(self, numbers: list[float], extras: list[float], loss: list[float], *,
                     step: bool, not_combined: str) -> ShardedMeasurement:
        """Square roots of the sums (``numbers``: the gradient blocks, then the step's);
        ``loss``: this rank's, and whether it has one."""
        count = len(self.params)
        grad_sq, has = numbers[:count], numbers[count:2 * count]
        clipped_sq = numbers[2 * count:3 * count]
        grads = [math.sqrt(s) if h > 0 else None for s, h in zip(grad_sq, has)]
        clipped = ([math.sqrt(s) if h > 0 else None for s, h in zip(clipped_sq, has)]
                   if self._clipped_norms else None)
        params = updates = None
        if step and len(numbers) >= 5 * count:
            params = [math.sqrt(s) for s in numbers[3 * count:4 * count]]
            updates = [math.sqrt(s) for s in numbers[4 * count:5 * count]]
        loss_sum, losses = extras[0], extras[1]
        ranks = range(self.world) if not not_combined else (self.rank,)
        loss_ranks = tuple(r for r in ranks if extras[2 + r] > 0)
        grad_ranks = tuple(r for r in ranks if extras[2 + self.world + r] > 0)
        nonfinite = any(g is not None and not math.isfinite(g) for g in grads)
        return ShardedMeasurement(
            loss[0] if loss[1] else None, grads, params, updates, clipped,
            not_combined=not_combined, loss_mean=loss_sum / losses if losses else None,
            loss_ranks=loss_ranks, grad_ranks=grad_ranks,
            overflow=nonfinite and not grad_ranks)


def _shard_ranks(param: torch.Tensor) -> tuple[tuple[int, ...], ...]:
    """The rank sets ``param``'s shard sums are added up over: one per mesh dimension on
    which it is ``Shard`` (never ``Replicate``: copies); () for a plain tensor."""
    if not is_dtensor(param):
        return ()
    import torch.distributed as dist

    mesh = param.device_mesh
    return tuple(tuple(dist.get_process_group_ranks(mesh.get_group(dim)))
                 for dim, placement in enumerate(param.placements) if placement.is_shard())


def _sampled_somewhere(param: torch.Tensor, sample: int | None) -> bool:
    """Whether any rank's shard of ``param`` is larger than the sample (then its norms
    there come from the sample): the largest shard, from the global shape and the mesh,
    so that every rank says the same without asking the others."""
    if sample is None:
        return False
    if not is_dtensor(param):
        return param.numel() > sample
    shape = list(param.shape)
    for dim, placement in enumerate(param.placements):
        if placement.is_shard():
            axis = placement.dim
            shape[axis] = -(-shape[axis] // param.device_mesh.size(dim))  # torch.chunk's first
    return math.prod(shape) > sample


def _ranks(ranks: Sequence[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))
