"""The watch's one collective: sums of squares added up over the ranks that hold the shards.

A sharded model's parameter (a DTensor: FSDP2's ``fully_shard``, HSDP) is split over
the ranks of its mesh's ``Shard`` dimensions; a norm of the whole parameter is the
square root of the shards' sums of squares added up over those ranks, and only those:
a ``Replicate`` dimension (HSDP's replicas) holds copies, which would count twice.
:class:`RankSums` adds up one float64 vector per read (every parameter's sums, and a
few numbers every rank must agree on) with ``all_reduce(SUM)``: one call where the
shards span the job (FSDP2 on one mesh), one per mesh group and one over the job
otherwise (HSDP). A vector of a few kB; what it costs is the meeting, not the bytes.

It must never hang the job or raise into the loop:

- it runs only where every rank comes, in the same order: the optimizer's step hooks
  (gradviz.training.norms.sharded says which reads combine), never from a break, a report or
  ``__exit__``; whether it runs depends on the watch's arguments, which every rank
  shares, never on what one rank saw;
- it runs on gloo groups of its own (on the host, beside the job's NCCL or gloo groups),
  made at the first sum with :data:`TIMEOUT`: a rank that left the loop (it raised, it
  skipped its step) costs the others that long once, not the job's own timeout (30
  minutes for gloo), and a rank that exited is seen at once (its connection closes);
- it first checks that every rank watches (each watch adds itself to a count in the
  job's store): where one does not, this rank's numbers stay its own, said once;
- on any failure it gives up for the rest of the run: the reads are this rank's shards
  only, flagged, with the reason (a group that timed out is out of step for good).
"""

from __future__ import annotations

import datetime
import itertools
import re
from collections.abc import Sequence

import torch

#: How long a rank waits for the others at the watch's collective before it records its
#: own shards only (for the rest of the run). Ranks meet there just after FSDP's
#: reduce-scatter and the step: any wait beyond seconds means one of them left the loop.
TIMEOUT = datetime.timedelta(minutes=5)

#: Watches of sharded models this process started, to name each one's count in the store.
_STARTED = itertools.count()
#: The gloo groups made so far, by their ranks: a later watch meets on them again (each
#: holds connections and threads); one that failed is dropped, never used again.
_GROUPS: dict[tuple[tuple[int, ...], datetime.timedelta], object] = {}

Ranks = tuple[int, ...]


class RankSums:
    """Adds up float64 vectors over the ranks that hold each parameter's shards.

    :meth:`set_buckets` says which parameters' sums are added up over which rank sets;
    :meth:`add_up` takes a vector of blocks of one value per parameter, then values
    that are added up over the whole job (what the ranks must agree on).
    """

    def __init__(self):
        import torch.distributed as dist

        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.failed = ""  # why this rank's numbers are its own from now on
        self._groups: dict[Ranks, object] = {}  # the groups this one has met on
        self._checked = False
        self._key = f"gradviz/watch/{next(_STARTED)}"
        self._store = _store()
        if self._store is not None:
            try:
                self._store.add(self._key, 1)  # this rank watches: see _check_everyone
            except Exception:  # noqa: BLE001 - no count: nothing is combined
                self._store = None
        self._buckets: list[tuple[list[int], list[Ranks]]] = []

    @property
    def job(self) -> Ranks:
        return tuple(range(self.world))

    def set_buckets(self, buckets: Sequence[tuple[list[int], list[Ranks]]]) -> None:
        """Which parameters' sums are added up over which rank sets (groups of one rank,
        and plain tensors, are whole already: nothing to add)."""
        self._buckets = [(list(indices), [r for r in ranks if len(r) > 1])
                         for indices, ranks in buckets]

    def add_up(self, vector: torch.Tensor, *, count: int, blocks: int) -> bool:
        """Add up ``vector`` (on the host, float64) in place: ``blocks`` blocks of ``count``
        values, one per parameter, over their buckets' ranks; the values after them over
        the whole job. False (and ``vector`` untouched, or partly added: read it as this
        rank's) when the ranks cannot be met; :attr:`failed` says why."""
        if self.failed:
            return False
        try:
            if not self._checked:
                self._check_everyone()
            for ranks, slots in self._plan(count, blocks, vector.numel()):
                group = self._group(ranks)
                if slots is None:
                    _all_reduce(vector, group)
                    continue
                part = vector[slots]
                _all_reduce(part, group)
                vector[slots] = part
        except _Apart as error:
            self.failed = str(error)
            return False
        except Exception as error:  # noqa: BLE001 - never into the user's loop
            self.failed = f"the ranks could not be met: {_first_line(error)}"
            for ranks in self._groups:  # out of step with the other ranks for good
                _GROUPS.pop((ranks, TIMEOUT), None)
            return False
        return True

    # -------------------------------------------------------------- internals
    def _plan(self, count: int, blocks: int, size: int):
        """(rank set, slots or None for the whole vector) for each all_reduce."""
        sharded = [(indices, ranks) for indices, ranks in self._buckets if ranks]
        if len(sharded) == 1 and sharded[0][1] == [self.job] and len(sharded[0][0]) == count:
            return [(self.job, None)]  # FSDP2 on one mesh: one call for it all
        plan = []
        for indices, ranks in sharded:
            positions = torch.tensor(indices, dtype=torch.long)
            slots = torch.cat([positions + block * count for block in range(blocks)])
            plan.extend((rank_set, slots) for rank_set in ranks)
        extras = torch.arange(blocks * count, size, dtype=torch.long)
        if self.world > 1 and extras.numel():
            plan.append((self.job, extras))
        return plan

    def _check_everyone(self) -> None:
        """Every rank of the job watches, or this rank combines nothing (one line why)."""
        self._checked = True
        if self._store is None:
            raise _Apart("the job's store could not be read to count the ranks that watch")
        watching = int(self._store.add(self._key, 0))
        if watching < self.world:
            raise _Apart(f"only {watching} of {self.world} ranks watch this model: call "
                         "gradviz.watch on every rank to combine the shards' norms")

    def _group(self, ranks: Ranks):
        group = self._groups.get(ranks)
        if group is None:
            group = _GROUPS.get((ranks, TIMEOUT))
        if group is None:
            import torch.distributed as dist

            # Only the members make it (use_local_synchronization), so a pipeline stage's
            # mesh, which the other stages do not know, is fine.
            group = dist.new_group(list(ranks), timeout=TIMEOUT, backend="gloo",
                                   use_local_synchronization=True)
            _GROUPS[(ranks, TIMEOUT)] = group
        self._groups[ranks] = group
        return group


class _Apart(Exception):
    """The ranks are not all watching: nothing to wait for."""


def _all_reduce(tensor: torch.Tensor, group) -> None:
    import torch.distributed as dist

    dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)


def _store():
    """The job's key-value store (torch's default one), or None where it cannot be had."""
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        return _get_default_store()
    except Exception:  # noqa: BLE001 - an older or newer torch: no count, no combining
        return None


def _first_line(error: BaseException) -> str:
    """An error's first sentence, without gloo's source location."""
    lines = str(error).strip().splitlines()
    text = re.sub(r"^\[[^\]]*\]\s*", "", lines[0] if lines else "")
    return (text.split(". ")[0] or type(error).__name__)[:200]
