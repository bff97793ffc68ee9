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
def test_export_png(tmp_path):
    assert main(["export", "autograd-basics", "-o", str(tmp_path / "q.png")]) == 0
    assert (tmp_path / "q.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["export", "nope"], 1, "no scenario named 'nope'"),
        (["export", "autograd-basics", "-o", "/no/such/folder/q.dot"], 1, "does not exist"),
        (["export", "autograd-basics", "--format", "gif"], 2, "invalid choice"),
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
