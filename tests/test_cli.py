"""The convcore command: output of info, and one-line errors with exit code 2 for bad arguments."""
import os
import subprocess
from pathlib import Path
import sys

import pytest

from convcore import cli


def test_info_prints_kernels_threads_and_a_timed_conv(capsys):
    assert cli.main(["info", "--threads", "1", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    assert "selected kernels" in out and "threads             : 1" in out
    assert "GFLOP/s" in out


@pytest.mark.parametrize("argv,fragment", [
    ([], "the following arguments are required: command"),
    (["info", "--threads", "0"], "--threads: must be an integer from 1 to 4096, got '0'"),
    (["info", "--threads", "5000"], "--threads: must be an integer from 1 to 4096, got '5000'"),
    (["train", "--threads", "5000"], "--threads: must be an integer from 1 to 4096, got '5000'"),
    (["info", "--repeat", "x"], "--repeat: must be a positive integer, got 'x'"),
    (["nonsense"], "invalid choice: 'nonsense'"),
])
def test_bad_arguments_exit_2_with_one_line(argv, fragment):
    proc = subprocess.run([sys.executable, "-m", "convcore", *argv], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and fragment in proc.stderr
    assert "Traceback" not in proc.stderr


def _train(*argv):
    return subprocess.run([sys.executable, "-m", "convcore", "train", "--threads", "1", *argv],
                          capture_output=True, text=True)


def test_train_on_a_small_data_set_writes_checkpoint_and_plots_and_resumes(tmp_path):
    from test_data import make_fashion_mnist

    folder = make_fashion_mnist(tmp_path / "fmnist", n_train=128, n_test=32)
    out = tmp_path / "run"
    proc = _train("--data", str(folder), "--epochs", "2", "--batch-size", "32", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "epoch 2/2" in proc.stdout and "test accuracy" in proc.stdout and "img/s" in proc.stdout
    assert "AdamW lr 0.002 weight decay 0.05, cosine schedule" in proc.stdout
    assert proc.stderr == ""  # no progress bar when the output is not a terminal
    assert (out / "checkpoint" / "latest").is_file()
    for png in ("curves.png", "filters.png", "activations.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG", png
    more = _train("--data", str(folder), "--epochs", "3", "--batch-size", "32", "--out", str(out), "--resume")
    assert more.returncode == 0, more.stderr
    assert "epoch 3/3" in more.stdout and "epoch 2/3" not in more.stdout  # epochs 1-2 came from the checkpoint
    other = _train("--data", str(folder), "--epochs", "4", "--batch-size", "16", "--out", str(out), "--resume")
    assert other.returncode == 2 and other.stderr.count("\n") == 1 and "data order" in other.stderr


def test_train_with_sgd_and_explicit_hyper_parameters(tmp_path):
    from test_data import make_fashion_mnist

    folder = make_fashion_mnist(tmp_path / "fmnist", n_train=64, n_test=16)
    proc = _train("--data", str(folder), "--epochs", "1", "--optimizer", "sgd", "--lr", "0.01", "--momentum", "0.5",
                  "--weight-decay", "0.001", "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    assert "SGD lr 0.01 momentum 0.5 weight decay 0.001, cosine schedule" in proc.stdout


def test_bench_runs_every_script_or_the_named_one(tmp_path, monkeypatch, capfd):
    for name in ("alpha", "beta"):
        (tmp_path / f"bench_{name}.py").write_text(f"import sys\nprint('ran {name}', sys.argv[1:])\n")
    monkeypatch.setattr(cli, "benchmarks_folder", lambda: tmp_path)
    assert cli.main(["bench"]) == 0
    out = capfd.readouterr().out
    assert "ran alpha []" in out and "ran beta []" in out
    assert cli.main(["bench", "beta", "--threads", "2"]) == 0
    out = capfd.readouterr().out
    assert "ran beta ['--threads', '2']" in out and "alpha" not in out
    monkeypatch.setattr(cli, "benchmarks_folder", lambda: tmp_path / "absent")
    assert cli.main(["bench"]) == 2
    assert "benchmarks/ folder, which this installation does not include" in capfd.readouterr().err


def test_train_with_a_missing_data_folder_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "convcore", "train", "--data", str(tmp_path / "none")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "no such folder" in proc.stderr and proc.stderr.count("\n") == 1


def test_train_with_an_out_that_cannot_be_a_folder_exits_2_before_training(tmp_path):
    from test_data import make_fashion_mnist

    folder = make_fashion_mnist(tmp_path / "fmnist", n_train=64, n_test=16)
    a_file = tmp_path / "taken"
    a_file.write_text("")
    proc = _train("--data", str(folder), "--epochs", "1", "--out", str(a_file))  # was a traceback after an epoch
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"--out {a_file}: cannot make its folder" in proc.stderr and "epoch 1/1" not in proc.stdout


def test_summary_of_an_absurd_input_exits_2_before_allocating(capsys):
    assert cli.main(["summary", "lenet5", "--input-shape", "1,2000000,2000000"]) == 2  # was a MemoryError traceback
    assert ("input shape (1, 2000000, 2000000) does not fit lenet5: the input image would have shape (1, 2000000, "
            "2000000) = 4000000000000 elements, more than the limit of 1099511627776") in capsys.readouterr().err


@pytest.mark.parametrize("argv,fragment", [
    (["train", "--epochs", "0"], "--epochs: must be a positive integer, got '0'"),
    (["train", "--lr", "-1"], "--lr: must be a positive number, got '-1'"),
    (["train", "--model", "vgg16"], "invalid choice: 'vgg16'"),
    (["train", "--seed", "-1"], "--seed: must be an integer >= 0, got '-1'"),
    (["train", "--momentum", "1"], "--momentum: must be a number in [0, 1), got '1'"),
    (["train", "--batch-size", "2.5"], "--batch-size: must be a positive integer, got '2.5'"),
    (["train", "--weight-decay", "-0.1"], "--weight-decay: must be a number >= 0, got '-0.1'"),
    (["train", "--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
    (["summary", "nonet"], "invalid choice: 'nonet'"),
    (["train", "--lr", "inf"], "--lr: must be a positive number, got 'inf'"),
    (["train", "--weight-decay", "nan"], "--weight-decay: must be a number >= 0, got 'nan'"),
    (["train", "--momentum", "nan"], "--momentum: must be a number in [0, 1), got 'nan'"),
    (["summary", "lenet5", "--input-shape", "1,x"],
     "--input-shape: must be 1 to 3 comma-separated positive integers like 3,224,224, got '1,x'"),
    (["summary", "lenet5", "--input-shape", "1,2,3,4"], "--input-shape: must be 1 to 3 comma-separated"),
    (["summary", "lenet5", "--input-shape", "1,0,3"], "--input-shape: must be 1 to 3 comma-separated"),
    (["bench", "nosuch"], "no benchmark 'nosuch'"),
])
def test_more_bad_arguments(argv, fragment):
    proc = subprocess.run([sys.executable, "-m", "convcore", *argv], capture_output=True, text=True)
    assert proc.returncode == 2 and fragment in proc.stderr and proc.stderr.count("\n") == 1


def test_summary_prints_the_table(capsys):
    assert cli.main(["summary", "lenet5"]) == 0
    assert "total parameters 61,706" in capsys.readouterr().out


def test_train_never_replaces_an_earlier_runs_checkpoint(tmp_path):
    # a second run without --resume into the same --out deleted the first run's checkpoint after its first epoch
    # (the default --out, runs/lenet5, made running the command twice lose the first trained model)
    from test_data import make_fashion_mnist

    folder = make_fashion_mnist(tmp_path / "fmnist", n_train=64, n_test=16)
    out = tmp_path / "run"
    assert _train("--data", str(folder), "--epochs", "1", "--out", str(out)).returncode == 0
    first = (out / "checkpoint" / "latest").read_text()
    again = _train("--data", str(folder), "--epochs", "1", "--out", str(out), "--model", "resnet20")
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert f"--out {out} holds the checkpoint of an earlier run: pass --resume" in again.stderr
    assert (out / "checkpoint" / "latest").read_text() == first and (out / "checkpoint" / first).is_dir()
    # the default output folder: a new run goes next to the earlier one, --resume continues the newest
    runs = []
    package_root = str(Path(cli.__file__).resolve().parents[1])  # importable from another working folder
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    for extra in ((), (), ("--resume", "--epochs", "2")):
        proc = subprocess.run([sys.executable, "-m", "convcore", "train", "--threads", "1", "--data", str(folder),
                               "--epochs", "1", *extra], capture_output=True, text=True, cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
        runs.append(proc.stdout.split("output in ")[1].split("\n")[0])
    assert runs == [str(Path("runs/lenet5")), str(Path("runs/lenet5-2")), str(Path("runs/lenet5-2"))]
    assert "epoch 2/2" in proc.stdout and "epoch 1/2" not in proc.stdout
    # a half-written save left by a killed run is no earlier run (it was taken for one)
    (tmp_path / "crashed" / "checkpoint" / ".step-00000002.tmp-99").mkdir(parents=True)
    assert _train("--data", str(folder), "--epochs", "1", "--out", str(tmp_path / "crashed")).returncode == 0


def test_train_resumes_with_the_runs_own_hyper_parameters(tmp_path):
    # --resume --lr 0.5 printed "lr 0.5" and went on with the checkpoint's 0.002
    from test_data import make_fashion_mnist

    folder = make_fashion_mnist(tmp_path / "fmnist", n_train=64, n_test=16)
    out = tmp_path / "run"
    assert _train("--data", str(folder), "--epochs", "1", "--out", str(out), "--lr", "0.001").returncode == 0
    for option, value in (("--lr", "0.5"), ("--weight-decay", "0.9")):
        proc = _train("--data", str(folder), "--epochs", "2", "--out", str(out), "--resume", option, value)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1
        assert f"{option} {value}: the run in {out} continues with its own settings ({option} " in proc.stderr
    proc = _train("--data", str(folder), "--epochs", "2", "--out", str(out), "--resume", "--optimizer", "sgd")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1  # a TypeError traceback in the first version
    assert f"--optimizer sgd: the run in {out} was trained with AdamW; resume it with that one" in proc.stderr
    proc = _train("--data", str(folder), "--epochs", "2", "--out", str(out), "--resume")
    assert proc.returncode == 0 and "AdamW lr 0.001 weight decay 0.05" in proc.stdout
    proc = _train("--data", str(folder), "--epochs", "1", "--out", str(tmp_path / "other"), "--momentum", "0.5")
    assert proc.returncode == 2 and "--momentum 0.5: applies to --optimizer sgd only" in proc.stderr


def test_train_interrupted_or_cut_off_stops_with_one_line(tmp_path):
    # a KeyboardInterrupt traceback (exit -2) and a BrokenPipeError traceback under `| head -1`
    import signal

    from test_data import make_fashion_mnist

    folder = make_fashion_mnist(tmp_path / "fmnist", n_train=256, n_test=16)
    command = [sys.executable, "-m", "convcore", "train", "--threads", "1", "--data", str(folder), "--epochs", "200",
               "--batch-size", "8"]
    # SIGINT at its default in the child (a shell's background job, as CI may run this suite, ignores it, and
    # Python then installs no KeyboardInterrupt handler)
    default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
    proc = subprocess.Popen([*command, "--out", str(tmp_path / "a")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=default_sigint)
    while "epoch 1/200" not in proc.stdout.readline():
        pass
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.count("\n") == 1 and "Traceback" not in err
    assert f"convcore: interrupted; the last checkpoint in {tmp_path / 'a' / 'checkpoint'} is kept" in err
    proc = subprocess.Popen([*command, "--out", str(tmp_path / "b")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # as `| head -1` does
    assert proc.wait(timeout=120) == 1 and b"Traceback" not in proc.stderr.read()
