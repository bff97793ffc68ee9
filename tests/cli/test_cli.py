"""The gradviz command: output, files and exit codes as a user sees them."""

import shutil
import subprocess
import sys

import pytest

from gradviz.cli import main


def gradviz(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "gradviz.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_list_shows_every_demo(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("autograd-basics", "resnet18", "finetune", "mlp-dataloader", "lstm",
                 "custom-function", "nan-grad"):
        assert f"\n{name} " in f"\n{out}"


def test_no_command_opens_the_app_and_demo_checks_its_name(monkeypatch):
    import gradviz.tui.app as app_module

    import gradviz.cli as cli_module

    opened = []
    monkeypatch.setattr(app_module, "run_app", lambda scenario, **kw: opened.append(scenario) or 0)
    monkeypatch.setattr(cli_module, "has_terminal", lambda: True)
    assert main([]) == 0 and main(["demo", "lstm"]) == 0
    assert opened == [None, "lstm"]
    result = gradviz("demo", "resnet19")
    assert result.returncode == 2 and "no demo named 'resnet19'" in result.stderr
    result = gradviz("open", "/no/such/file.py")
    assert result.returncode == 1 and "does not exist" in result.stderr


def test_export_dot_json_to_files(tmp_path, capsys):
    assert main(["export", "autograd-basics", "-o", str(tmp_path / "q.dot")]) == 0
    assert "wrote" in capsys.readouterr().err
    assert '"param:a"' in (tmp_path / "q.dot").read_text()
    assert main(["export", "finetune", "-o", str(tmp_path / "f.json")]) == 0
    assert '"fc.weight"' in (tmp_path / "f.json").read_text()


def test_export_default_name_and_stdout(tmp_path):
    result = gradviz("export", "autograd-basics", cwd=tmp_path)
    assert result.returncode == 0 and (tmp_path / "autograd-basics.dot").exists()
    result = gradviz("export", "autograd-basics", "-o", "-", "--format", "json")
    assert result.returncode == 0 and result.stdout.lstrip().startswith("{")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_export_png_and_pdf(tmp_path):
    assert main(["export", "autograd-basics", "-o", str(tmp_path / "q.png")]) == 0
    assert (tmp_path / "q.png").read_bytes().startswith(b"\x89PNG")
    assert main(["export", "autograd-basics", "-o", str(tmp_path / "q.pdf")]) == 0
    assert (tmp_path / "q.pdf").read_bytes().startswith(b"%PDF")  # not DOT text


def test_a_pdf_without_graphviz_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    import gradviz.graph.export as export

    monkeypatch.setattr(export.shutil, "which", lambda name: None)
    with pytest.raises(gradviz_errors().ExportError, match="Graphviz's dot program is not "
                       "installed, and it draws pdf"):
        export.render(export.build_graph(tutorial_q()), tmp_path / "q.pdf", "pdf")
    assert not (tmp_path / "q.pdf").exists()


def gradviz_errors():
    import gradviz.errors

    return gradviz.errors


def tutorial_q():
    import torch

    a = torch.tensor([2.0, 3.0], requires_grad=True)
    return 3 * a**3


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["export", "nope"], 1, "no scenario named 'nope'"),
        (["export", "autograd-basics", "-o", "/no/such/folder/q.dot"], 1, "does not exist"),
        (["export", "autograd-basics", "--format", "gif"], 2, "invalid choice"),
        (["export", "autograd-basics", "-o", "q.gif"], 2, "cannot export to .gif: give -o a file"),
        (["export", "autograd-basics", "-o", "q.pdf", "--format", "dot"], 2,
         "-o q.pdf says pdf, --format says dot"),
        (["open", "resnet18"], 1, "resnet18 is a built-in demo, not a file: gradviz demo "
                                  "resnet18 opens it"),
        (["export", "autograd-basics", "-o", "-", "--format", "png"], 2, "cannot go to stdout"),
        (["frobnicate"], 2, "invalid choice"),
    ],
)
def test_errors_are_one_line_with_exit_codes(args, code, message):
    result = gradviz(*args)
    assert result.returncode == code
    assert message in result.stderr and "Traceback" not in result.stderr
    if code == 1:
        assert result.stderr.count("\n") == 1


def test_debug_shows_the_traceback(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def build():\n    raise KeyError('x')\n")
    quiet = gradviz("export", str(broken))
    assert quiet.returncode == 1 and "build() raised KeyError" in quiet.stderr
    loud = gradviz("export", str(broken), "--debug")
    assert "Traceback" in loud.stderr and "KeyError" in loud.stderr


def test_train_without_an_optimizer_numbers_the_iterations_it_ran(tmp_path):
    path = tmp_path / "no_optimizer.py"
    path.write_text("import torch, gradviz\nx = torch.ones(3, requires_grad=True)\n"
                    "def build():\n    return gradviz.Scenario(name='plain', params={'x': x},"
                    " forward=lambda: (x * 2).sum())\n")
    result = gradviz("train", str(path), "--steps", "2")
    assert result.returncode == 0
    assert "│         1 │" in result.stdout and "│         2 │" in result.stdout


def test_train_prints_losses_updates_and_where_nan_started():
    result = gradviz("train", "nan-grad", "--steps", "2")
    assert result.returncode == 1  # its check fails
    assert "first non-finite gradient: iteration 1, node SqrtBackward0#0" in result.stdout
    assert "module abs" in result.stdout and "check all gradients finite: FAIL" in result.stdout
    ok = gradviz("train", "autograd-basics", "--steps", "3")
    assert ok.returncode == 0 and "│         3 │ -31.7814 │" in ok.stdout
    assert "check 9*a**2 == a.grad: pass" in ok.stdout


def test_train_needs_a_positive_step_count():
    result = gradviz("train", "autograd-basics", "--steps", "0")
    assert result.returncode == 2 and "must be at least 1" in result.stderr


# ---------------------------------------------------------------- bad input: one line, exit 1





def one_line_error(result, *fragments):
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


@pytest.mark.parametrize("command", ["train", "export"])
def test_a_forward_that_raises_is_one_line_for_train_and_export(scenario_file, tmp_path, command):
    path = scenario_file("    raise ValueError('no data')")
    one_line_error(gradviz(command, path, cwd=tmp_path),
                   "scenario 's': forward() raised ValueError: no data")


def test_a_forward_that_raises_on_a_later_iteration_is_one_line(scenario_file):
    path = scenario_file("    if len(calls) == 3:\n        raise ValueError('batch 3')\n"
                             "    return (w * w).sum()")
    one_line_error(gradviz("train", path, "--steps", "5"), "forward() raised ValueError: batch 3")


def test_a_gradient_of_the_wrong_shape_is_one_line(scenario_file, tmp_path):
    path = scenario_file("    return w * 2", extra="gradient=torch.ones(2),")
    for command in ("train", "export"):
        result = gradviz(command, path, cwd=tmp_path)
        if command == "export":  # export walks the graph; backward is what needs the gradient
            assert result.returncode == 0
        else:
            one_line_error(result, "the gradient for the root has shape (2,), the root (3,)")


def test_an_error_inside_backward_is_one_line_naming_the_node(scenario_file):
    path = scenario_file("    y = w.sigmoid()\n    loss = (y * 2).sum()\n"
                             "    y.add_(1)\n    return loss")
    one_line_error(gradviz("train", path), "backward failed at SigmoidBackward0#0",
                   "RuntimeError: one of the variables needed")


@pytest.mark.parametrize(("args", "message"), [
    (["open", "{tmp}"], "scenario file {tmp} is a folder"),
    (["demo", "resnet18", "--weights", "{tmp}/missing.pt"], "weights file {tmp}/missing.pt does not exist"),
    (["demo", "resnet18", "--weights", "{tmp}"], "weights file {tmp} is a folder"),
    (["open", "{tmp}/nothing.py"], "scenario file {tmp}/nothing.py does not exist"),
])
def test_arguments_fail_before_the_app_starts(tmp_path, args, message):
    result = gradviz(*[a.format(tmp=tmp_path) for a in args])
    one_line_error(result, message.format(tmp=tmp_path))


def test_steps_that_are_not_a_number_say_so():
    result = gradviz("train", "autograd-basics", "--steps", "abc")
    assert result.returncode == 2 and "expected a whole number, got 'abc'" in result.stderr


def test_a_pickled_model_as_weights_is_one_line_without_torchs_warning(tmp_path):
    import torch

    weights = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), weights)  # a whole module: not a weights_only state dict
    result = gradviz("export", "resnet18", "--weights", str(weights), "-o", str(tmp_path / "r.dot"))
    one_line_error(result, "is not a state dict that torch.load(weights_only=True) can read")


def test_a_base_exception_from_build_is_one_line(tmp_path):
    path = tmp_path / "exits.py"
    path.write_text("class Stop(BaseException):\n    pass\n"
                    "def build():\n    raise Stop('no')\n")
    one_line_error(gradviz("export", str(path)), "build() raised Stop: no")


@pytest.mark.parametrize("junk", [b"junk\n", b"\x80\x02}q\x00", bytes(range(256)) * 8])
def test_weights_that_are_junk_are_not_a_state_dict(tmp_path, junk):
    weights = tmp_path / "w.pt"
    weights.write_bytes(junk)
    one_line_error(gradviz("export", "resnet18", "--weights", str(weights), "-o",
                           str(tmp_path / "r.dot")),
                   "is not a state dict that torch.load(weights_only=True) can read")


def test_the_app_without_a_terminal_refuses_at_once():
    result = subprocess.run([sys.executable, "-m", "gradviz.cli", "demo", "autograd-basics"],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    one_line_error(result, "the app needs a terminal")


def test_ctrl_c_during_train_prints_the_iterations_that_finished(scenario_file, tmp_path):
    import signal
    import time

    started = tmp_path / "started"
    path = scenario_file(f"    open({str(started)!r}, 'w').close()\n    return (w * w).sum()")
    process = subprocess.Popen(
        [sys.executable, "-m", "gradviz.cli", "train", path, "--steps", "1000000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # some iterations finish
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted after" in err and "of 1000000 iterations" in err
    assert "training" in out and "│         1 │" in out
