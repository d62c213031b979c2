"""The convcore command: output of info, and one-line errors with exit code 2 for bad arguments."""
import subprocess
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
    (["info", "--threads", "0"], "--threads: must be a positive integer, got '0'"),
    (["info", "--repeat", "x"], "--repeat: must be a positive integer, got 'x'"),
    (["nonsense"], "invalid choice: 'nonsense'"),
])
def test_bad_arguments_exit_2_with_one_line(argv, fragment):
    proc = subprocess.run([sys.executable, "-m", "convcore", *argv], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and fragment in proc.stderr
    assert "Traceback" not in proc.stderr
