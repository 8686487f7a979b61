"""The README's first command, `scripts/local-cluster.sh`, run as a user runs it: it starts a
coordinator, three storage nodes and a gateway on loopback, prints the cairnctl commands to
try, serves them, and stops everything on Ctrl-C. Once with plaintext and once with `--tls`
(its certificates made by `cairnctl dev certs`, the flags it prints used as printed, and auth
on with those flags acting as root).

The script builds the debug binaries itself (a no-op after the Rust tests) and uses the fixed
ports of the README (7000-7103, 9000-9103)."""

import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 600
STOP_TIMEOUT_S = 30


def run_local_cluster(tmp_path, *flags):
    env = dict(os.environ, CAIRN_LOCAL_DATA=str(tmp_path / "data"))
    log = open(tmp_path / "local-cluster.log", "w+")
    process = subprocess.Popen(
        [str(REPO / "scripts" / "local-cluster.sh"), *flags],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return process, log


def wait_until_running(process, log):
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        log.seek(0)
        text = log.read()
        if "Press Ctrl-C to stop." in text:
            return text
        if process.poll() is not None:
            pytest.fail(f"local-cluster.sh exited with {process.returncode}:\n{text[-4000:]}")
        time.sleep(1)
    pytest.fail(f"local-cluster.sh not running within {READY_TIMEOUT_S} s")


def printed_command(text, subcommand):
    """The cairnctl command line the script printed for `subcommand` (e.g. `put greeting`)."""
    for line in text.splitlines():
        words = shlex.split(line.strip()) if "cairnctl" in line else []
        if words and words[0].endswith("/cairnctl") and subcommand in " ".join(words):
            return words
    pytest.fail(f"local-cluster.sh printed no `cairnctl ... {subcommand}` line:\n{text[-4000:]}")


def stop(process):
    os.killpg(process.pid, signal.SIGINT)
    try:
        return process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"local-cluster.sh did not stop within {STOP_TIMEOUT_S} s of Ctrl-C")


@pytest.mark.parametrize("flags", [[], ["--tls"]], ids=["plaintext", "tls"])
def test_local_cluster_serves_the_commands_it_prints(tmp_path, flags):
    process, log = run_local_cluster(tmp_path, *flags)
    try:
        text = wait_until_running(process, log)
        assert re.search(r"Cairn is running", text), text[-2000:]
        put = printed_command(text, "put greeting hello")
        get = printed_command(text, "get greeting")
        written = subprocess.run(put, capture_output=True, text=True, timeout=60)
        assert written.returncode == 0, written.stderr
        read = subprocess.run(get, capture_output=True, text=True, timeout=60)
        assert read.returncode == 0, read.stderr
        assert "hello" in read.stdout, read.stdout
        if "--tls" in flags:
            # Auth is on, and the printed flags act as root (the client certificate's name).
            status_command = put[: -len(["put", "greeting", "hello"])] + ["auth", "status"]
            status = subprocess.run(status_command, capture_output=True, text=True, timeout=60)
            assert status.returncode == 0, status.stderr
            assert re.search(r"enabled\s+true", status.stdout), status.stdout
    finally:
        if process.poll() is None:
            code = stop(process)
        else:
            code = process.returncode
        log.close()
    # 130: the shell's code for a script ended by SIGINT, which is how Ctrl-C stops it.
    assert code in (0, 130), f"local-cluster.sh exited with {code} after Ctrl-C"
