"""gradviz export RUN.db --tensorboard DIR, read back with TensorBoard's own EventAccumulator:
every tag's steps, values and wall times are the record's (RunRecord.history()); a folder
that cannot be written and a missing tensorboard package are one line and exit 1."""

import math
import sqlite3
import subprocess
import sys

import pytest
import torch
from torch import nn

import gradviz
from gradviz.integrations.tensorboard import export_tensorboard

event_accumulator = pytest.importorskip(
    "tensorboard.backend.event_processing.event_accumulator",
    reason="the read-back needs the tensorboard package (pip install 'gradviz[tensorboard]')")

STEPS = 40


def gradviz_cli(*args, code=None):
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "gradviz.cli"]
    return subprocess.run([*command, *map(str, args)], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    """A real watched run: two layers, a parameter of the model itself (layer ''), a
    learning rate that halves every 10 steps, a NaN loss at iteration 7 (the gradients
    stay finite: a NaN constant added), and a layer without a gradient at 20-21."""
    path = tmp_path_factory.mktemp("tb") / "run.db"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    model.register_parameter("scale", nn.Parameter(torch.ones(1)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, 10, 0.5)
    with gradviz.watch(model, optimizer, record=path, on_break="report"):
        for i in range(1, STEPS + 1):
            x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
            hidden = model[1](model[0](x))
            if i in (20, 21):
                hidden = hidden.detach()  # layer '0' gets no gradient
            loss = nn.functional.cross_entropy(model[2](hidden) * model.scale, y)
            if i == 7:
                loss = loss + torch.tensor(math.nan)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return path


def read_back(logdir):
    accumulator = event_accumulator.EventAccumulator(
        str(logdir), size_guidance={event_accumulator.SCALARS: 0})  # 0: every point
    accumulator.Reload()
    return accumulator


def equal(read, recorded):
    """TensorBoard keeps float32: equal to 1e-6, NaN where the record has NaN."""
    assert len(read) == len(recorded)
    for got, want in zip(read, recorded):
        assert math.isnan(got) if math.isnan(want) else got == pytest.approx(want, rel=1e-6)


def test_every_scalar_read_back_is_the_records(record, tmp_path):
    done = export_tensorboard(record, tmp_path / "tb")
    accumulator = read_back(tmp_path / "tb")
    with gradviz.RunRecord(record) as opened:
        history = opened.history()
    assert history.layers == ["", "0", "2"]
    layers = ["(model)", "0", "2"]
    assert set(accumulator.Tags()["scalars"]) == (
        {"loss", "grad_norm", "lr"} | {f"grad_norm/{name}" for name in layers}
        | {f"update_ratio/{name}" for name in layers})
    assert (done.run, done.iterations, done.layers) == (1, STEPS, 3)

    def series(tag):
        events = accumulator.Scalars(tag)
        return [e.step for e in events], [e.value for e in events], [e.wall_time for e in events]

    steps, losses, walls = series("loss")
    assert steps == history.iteration_numbers == list(range(1, STEPS + 1))
    equal(losses, history.losses)
    assert math.isnan(losses[6])
    assert walls == pytest.approx([row.time for row in history.iterations])
    equal(series("grad_norm")[1], history.grad_norms)
    equal(series("lr")[1], [row.lr for row in history.iterations])
    assert series("lr")[1][0] == pytest.approx(0.05) and series("lr")[1][-1] == pytest.approx(
        0.05 * 0.5 ** 3)
    for j, name in enumerate(layers):
        steps, values, _ = series(f"grad_norm/{name}")
        recorded = history.layer_grad_norms[j]
        # a layer without a gradient is left out at that iteration
        assert steps == [it for it, v in zip(history.iteration_numbers, recorded)
                         if not math.isnan(v)]
        equal(values, [v for v in recorded if not math.isnan(v)])
        steps, values, _ = series(f"update_ratio/{name}")
        ratios = history.layer_update_ratios[j]
        assert steps == [it for it, v in zip(history.iteration_numbers, ratios)
                         if not math.isnan(v)]
        equal(values, [v for v in ratios if not math.isnan(v)])
    assert 20 not in series("grad_norm/0")[0] and 20 in series("grad_norm/2")[0]
    assert done.scalars == sum(len(accumulator.Scalars(t)) for t in accumulator.Tags()["scalars"])


def test_a_nan_gradient_is_written_as_nan(record, tmp_path):
    copy = tmp_path / "nan.db"
    copy.write_bytes(record.read_bytes())
    db = sqlite3.connect(copy)
    db.execute("UPDATE param_stats SET grad_norm = NULL, flags = flags | 4 WHERE iteration = 12 "
               "AND param = (SELECT param FROM params WHERE name = '2.weight')")
    db.commit()
    db.close()
    export_tensorboard(copy, tmp_path / "tb")
    events = read_back(tmp_path / "tb").Scalars("grad_norm/2")
    assert [e.step for e in events] == list(range(1, STEPS + 1))
    assert math.isnan(events[11].value) and math.isfinite(events[10].value)


def test_the_cli_writes_and_says_what(record, tmp_path):
    logdir = tmp_path / "logs" / "a"  # made, parents too
    result = gradviz_cli("export", record, "--tensorboard", logdir)
    assert result.returncode == 0, result.stderr
    head = f"wrote {logdir}: run 1, {STEPS} iterations, 3 layers, "
    tail = f" scalars (tensorboard --logdir {logdir})\n"
    assert result.stderr.startswith(head) and result.stderr.endswith(tail)
    accumulator = read_back(logdir)
    assert int(result.stderr[len(head):-len(tail)]) == sum(
        len(accumulator.Scalars(tag)) for tag in accumulator.Tags()["scalars"])


def one_line_error(result, *fragments):
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_a_folder_that_cannot_be_written_is_one_line(record, tmp_path):
    (tmp_path / "taken").write_text("a file")
    one_line_error(gradviz_cli("export", record, "--tensorboard", tmp_path / "taken"),
                   "cannot write TensorBoard files to", "taken: it is a file, not a folder")
    one_line_error(gradviz_cli("export", record, "--tensorboard", tmp_path / "taken" / "below"),
                   "cannot write TensorBoard files to")


def test_a_bad_record_is_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "notes.db").write_text("not a database " * 300)
    one_line_error(gradviz_cli("export", tmp_path / "notes.db", "--tensorboard", tmp_path / "tb"),
                   "notes.db is not a gradviz record")
    one_line_error(gradviz_cli("export", tmp_path / "gone.db", "--tensorboard", tmp_path / "tb"),
                   "gone.db: no such record file")
    assert not (tmp_path / "tb").exists()


def test_without_the_tensorboard_package_it_says_what_to_install(record, tmp_path):
    hide = ("import sys; sys.modules['tensorboard'] = None; from gradviz.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    result = gradviz_cli("export", record, "--tensorboard", tmp_path / "tb", code=hide)
    one_line_error(result, 'pip install "gradviz[tensorboard]"')
