"""gradviz.watch on FSDP2 (``fully_shard``): the whole parameters' norms from every rank's
shards, equal to an unsharded run's; NaN/Inf told on every rank with the rank that had
it; a rank that raises or leaves the loop hangs no one.

The distributed tests run ``tests/training/fsdp_ranks.py`` under ``torchrun
--nproc-per-node 2`` (gloo, CPU) and read the records it leaves.
"""

import json
import math
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gradviz.training.diagnosis.nan_origin import _held
from gradviz.training.user_names import user_class_name, user_name

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("fsdp_ranks.py")
TORCHRUN = Path(sys.executable).with_name("torchrun")
#: Relative: what the brief of issue 18 asks of float32 (measured: 6e-6 at worst, an
#: update of a parameter near 1.0, whose float32 subtraction rounds at 1e-7 absolute).
FLOAT32 = 1e-5
FLOAT64 = 1e-9


def _why_not() -> str | None:
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        return "torch.distributed with gloo is not available"
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        return "this torch has no FSDP2 (torch.distributed.fsdp.fully_shard)"
    if not TORCHRUN.exists():
        return f"no torchrun beside {sys.executable}"
    return None


distributed = pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))


def torchrun(out: Path, case: str, *, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               OMP_NUM_THREADS="1", OMP_WAIT_POLICY="passive")
    return subprocess.run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2", str(SCRIPT),
                           str(out), case], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fsdp")
    done = torchrun(out, "runs", timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


class Record:
    """A record's runs by rank: iterations, per-parameter rows by name, events."""

    def __init__(self, path: Path):
        self.db = sqlite3.connect(path)
        self.runs = dict(self.db.execute("SELECT rank, run FROM runs"))

    def status(self, rank: int) -> tuple:
        return self.db.execute("SELECT status, model FROM runs WHERE rank = ?",
                               (rank,)).fetchone()

    def iterations(self, rank: int) -> dict[int, tuple]:
        return {row[0]: row[1:] for row in self.db.execute(
            "SELECT iteration, loss, grad_norm, grad_norm_clipped, nonfinite FROM iterations "
            "WHERE run = ? ORDER BY iteration", (self.runs[rank],))}

    def params(self, rank: int) -> dict[tuple[int, str], tuple]:
        return {(it, name): (grad, param, update, flags) for it, name, grad, param, update, flags
                in self.db.execute(
                    "SELECT s.iteration, p.name, s.grad_norm, s.param_norm, s.update_norm, "
                    "s.flags FROM param_stats s JOIN params p USING (run, param) "
                    "WHERE run = ?", (self.runs[rank],))}

    def infos(self, rank: int) -> dict[str, tuple]:
        return {name: (shape, sampled) for name, shape, sampled in self.db.execute(
            "SELECT name, shape, sampled FROM params WHERE run = ?", (self.runs[rank],))}

    def events(self, rank: int) -> list[tuple]:
        return self.db.execute("SELECT iteration, kind, detail, note FROM events WHERE run = ? "
                               "ORDER BY iteration, kind", (self.runs[rank],)).fetchall()


def relative(got, want) -> float:
    if got is None or want is None:
        return 0.0 if got is want else math.inf
    return abs(got - want) / max(abs(want), 1e-30)


@distributed
@pytest.mark.parametrize("case, tolerance", [("plain", FLOAT32), ("float64", FLOAT64),
                                             ("breaks", FLOAT32), ("hsdp", FLOAT32)])
def test_every_norm_equals_the_unsharded_runs(runs, case, tolerance):
    sharded, whole = Record(runs / f"{case}.db"), Record(runs / f"{case}-whole.db")
    want, want_rows = whole.iterations(0), whole.params(0)
    assert sorted(sharded.runs) == [0, 1]
    for rank in (0, 1):
        assert sharded.status(rank) == ("finished", "TinyNet")  # not FSDPTinyNet
        assert sharded.infos(rank) == whole.infos(0)  # the user's names and whole shapes
        rows = sharded.params(rank)
        assert rows.keys() == want_rows.keys() and len(rows) == 5 * 19
        worst = max(relative(got, ref) for key, values in rows.items()
                    for got, ref in zip(values[:3], want_rows[key][:3]))
        assert worst <= tolerance, (rank, worst)
        assert all(values[3] == want_rows[key][3] for key, values in rows.items())  # flags
        for iteration, (loss, total, clipped, nonfinite) in sharded.iterations(rank).items():
            assert relative(total, want[iteration][1]) <= tolerance
            assert relative(clipped, want[iteration][2]) <= tolerance
            assert not nonfinite
        assert sharded.events(rank) == []
    # each rank records its own loss; their mean is the whole batch's
    for iteration, (loss, *_) in want.items():
        mean = (sharded.iterations(0)[iteration][0] + sharded.iterations(1)[iteration][0]) / 2
        assert relative(mean, loss) <= tolerance


@distributed
def test_the_recorded_grad_norm_is_what_clip_grad_norm_returned_on_every_rank(runs):
    record = Record(runs / "plain.db")
    for rank in (0, 1):
        returned = json.loads((runs / f"runs-rank{rank}.json").read_text())["plain"]["clip"]
        recorded = record.iterations(rank)
        assert len(returned) == len(recorded) == 5
        for iteration, norm in enumerate(returned, 1):
            total, clipped = recorded[iteration][1:3]
            assert relative(total, norm) <= 1e-6
            assert relative(clipped, min(norm, 0.5)) <= 1e-6  # clipped to max_norm=0.5


@distributed
def test_a_parameter_larger_than_the_sample_on_its_shards_is_sampled_there(runs):
    sharded, whole = Record(runs / "sampled.db"), Record(runs / "sampled-whole.db")
    want = whole.params(0)
    for rank in (0, 1):
        assert {n for n, (_, sampled) in sharded.infos(rank).items() if sampled} == {"table"}
        for (iteration, name), (grad, param, update, _) in sharded.params(rank).items():
            ref = want[(iteration, name)]
            assert relative(grad, ref[0]) <= FLOAT32  # gradients are read whole
            limit = 0.1 if name == "table" else FLOAT32  # measured: 2.2% and 1.1%
            assert relative(param, ref[1]) <= limit and relative(update, ref[2]) <= limit


@distributed
def test_a_nan_in_one_ranks_shard_is_noted_on_every_rank_with_that_rank(runs):
    record = Record(runs / "nan-shard.db")
    for rank in (0, 1):
        assert record.iterations(rank)[3][3] == 1  # nonfinite, on both ranks
        assert record.params(rank)[(3, "blocks.1.fc1.weight")][3] & 4  # its row: NaN grad
        assert record.params(rank)[(3, "blocks.1.fc2.weight")][3] & 4 == 0
        (iteration, kind, detail, _), *_ = [e for e in record.events(rank)
                                            if e[1] == "nonfinite"]
        assert (iteration, kind) == (3, "nonfinite")
        assert detail.startswith("a gradient is NaN/Inf in the shards of rank 1")
    # the break is rank 0's (the other notes it); no backward is stepped again there
    breaks = json.loads((runs / "runs-rank0.json").read_text())["nan-shard"]["breaks"]
    assert breaks == [[3, "nonfinite"]]
    assert "noted: breaks are taken on rank 0" in record.events(1)[0][2]
    assert record.events(0)[0][3].startswith("not stepped again: the model is sharded")


@distributed
def test_a_nan_loss_on_one_rank_is_named_on_every_rank_and_its_origin_found_there(runs):
    record = Record(runs / "nan-loss.db")
    for rank in (0, 1):
        nonfinite = [e for e in record.events(rank) if e[1] == "nonfinite"]
        assert [e[:2] for e in nonfinite] == [(2, "nonfinite")]
        assert nonfinite[0][2].startswith("the loss is NaN/Inf on rank 0; gradients NaN/Inf "
                                          "in the shards of ranks 0, 1")
    # rank 0 made it: its kept graph is read (activations only: FSDP2 freed the gathered
    # weights, which reading would crash on) and names the first op that saved a NaN
    origin = next(e for e in record.events(0) if e[1] == "nonfinite")[3]
    assert origin.startswith("AddmmBackward0 was the first op to save a NaN/Inf input")


@distributed
def test_a_rank_watched_alone_records_its_shards_flagged_and_says_why(runs):
    record = Record(runs / "alone.db")
    assert sorted(record.runs) == [0]
    assert record.status(0)[0] == "finished"
    why = ("only 1 of 2 ranks watch this model: call gradviz.watch on every rank to "
           "combine the shards' norms")
    assert record.events(0) == [(1, "not-combined", why, None)]
    assert all(flags & 64 for *_, flags in record.params(0).values())


@distributed
def test_a_rank_that_raises_hangs_no_one_and_is_recorded_failed(tmp_path):
    started = time.monotonic()
    done = torchrun(tmp_path, "raise", timeout=240)
    assert done.returncode != 0
    assert "rank 1's loop failed" in done.stderr + done.stdout
    assert time.monotonic() - started < 200
    record = Record(tmp_path / "raise.db")
    assert record.status(1)[0] == "failed"
    assert list(record.iterations(1)) == [1, 2]
    combined = record.params(0)
    assert all(not flags & 64 for (it, _), (*_, flags) in combined.items() if it < 3)


@distributed
def test_a_rank_that_leaves_the_loop_costs_the_others_one_timeout(tmp_path):
    """Rank 1 raises before its step, catches it outside the watch and lingers: rank 0
    waits at the watch's collective for its timeout (3 s here), records that iteration
    from its own shards, flagged, and goes on (until FSDP's own collective fails)."""
    done = torchrun(tmp_path, "leave", timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    record = Record(tmp_path / "leave.db")
    assert record.status(1)[0] == "failed"
    assert record.status(0)[0] == "failed"  # FSDP's next all-gather, once rank 1 exits
    assert list(record.iterations(0)) == [1, 2, 3]
    (iteration, kind, detail, _), = record.events(0)
    assert (iteration, kind) == (3, "not-combined")
    assert detail == ("the ranks could not be met: Timed out waiting 3000ms for recv "
                      "operation to complete")
    flags = {(it, name): row[3] for (it, name), row in record.params(0).items()}
    assert all(bool(f & 64) == (it == 3) for (it, _), f in flags.items())
    seen = json.loads((tmp_path / "leave-rank0.json").read_text())
    assert seen["seconds"] < 60  # 3 s at the watch's collective, then rank 1's 8 s


# ------------------------------------------------------------ one process, no torchrun
def test_names_lose_the_segments_block_wrappers_put_in_them():
    assert user_name("blocks.0._checkpoint_wrapped_module.fc1.weight") == "blocks.0.fc1.weight"
    assert user_name("blocks.1._orig_mod.attn.qkv.bias") == "blocks.1.attn.qkv.bias"
    assert user_name("head.weight") == "head.weight"
    assert user_class_name(torch.nn.Linear(2, 2)) == "Linear"


def test_a_saved_tensor_whose_storage_was_freed_is_not_read():
    weight = torch.randn(4, 3)
    view = weight.t()
    assert _held(view)
    weight.untyped_storage().resize_(0)  # what FSDP2 does to a gathered weight
    assert not _held(view) and not _held(weight)
    assert _held(torch.empty(0))
