"""``receive-yamls``: the upload pod's receiver, and the ``--put`` / ``--complete`` commands that
``submit`` runs in it through exec."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cng_datasets.errors import ClusterError, UsageError
from cng_datasets.k8s import receive

EXPECT = ["a.yaml", "b.yaml"]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_marker_completes_the_upload(tmp_path: Path) -> None:
    r = receive.Receiver(tmp_path, EXPECT, stable_seconds=1000)
    r.start()
    assert not r.poll()
    receive.put(tmp_path, "a.yaml", b64(b"kind: Job\n"), wait=0)
    assert r.missing() == ["b.yaml"]
    with pytest.raises(ClusterError, match="missing: b.yaml"):
        receive.complete(tmp_path, wait=0)
        r.poll()
    receive.put(tmp_path, "b.yaml", b64(b"kind: Job\n"), wait=0)
    assert r.poll()
    assert (tmp_path / "a.yaml").read_bytes() == b"kind: Job\n"


def test_leftovers_of_an_earlier_upload_never_count(tmp_path: Path) -> None:
    for n in EXPECT:
        (tmp_path / n).write_text("old")
        os.utime(tmp_path / n, (time.time() - 3600, time.time() - 3600))
    (tmp_path / ".complete").write_text("other-pod/1/1")  # a marker of an earlier receiver
    clock = Clock()
    r = receive.Receiver(tmp_path, EXPECT, stable_seconds=5, clock=clock)
    r.start()
    for _ in range(20):
        assert not r.poll()
        clock.sleep(1)


def test_stable_files_complete_without_a_marker(tmp_path: Path) -> None:
    clock = Clock()
    r = receive.Receiver(tmp_path, EXPECT, stable_seconds=5, clock=clock)
    r.start()
    (tmp_path / "a.yaml").write_text("a")
    (tmp_path / "b.yaml").write_text("b")
    assert not r.poll()
    clock.sleep(3)
    (tmp_path / "b.yaml").write_text("bb")  # still being written
    assert not r.poll()
    clock.sleep(4)
    assert not r.poll()
    clock.sleep(2)
    assert r.poll()


def test_timeout_names_what_is_missing(tmp_path: Path) -> None:
    clock = Clock()
    with pytest.raises(ClusterError, match=r"timed out after 30 s waiting for a.yaml, b.yaml"):
        receive.receive(tmp_path, EXPECT, timeout=30, clock=clock, sleep=clock.sleep)


def test_parts_assemble_in_any_order_and_are_checked(tmp_path: Path) -> None:
    receive.Receiver(tmp_path, EXPECT).start()
    data = os.urandom(10_000)
    cmds = receive.put_commands("/yamls", "a.yaml", data)
    assert len(cmds) == 5 and all(len(c[7]) <= receive.PART_CHARS for c in cmds)
    for cmd in reversed(cmds):
        opts = dict(zip(cmd[2::2], cmd[3::2], strict=False))
        done = receive.put(
            tmp_path,
            "a.yaml",
            opts["--content-b64"],
            part=int(opts["--part"]),
            parts=int(opts["--parts"]),
            sha256=opts["--sha256"],
            wait=0,
        )
    assert done and (tmp_path / "a.yaml").read_bytes() == data
    assert not list(tmp_path.glob(".a.yaml.part*"))
    with pytest.raises(ClusterError, match="sha256"):
        receive.put(tmp_path, "b.yaml", b64(b"x"), sha256=hashlib.sha256(b"y").hexdigest(), wait=0)
    assert not (tmp_path / "b.yaml").exists()


@pytest.mark.parametrize("name", ["../x.yaml", "sub/x.yaml", ".complete", ""])
def test_put_refuses_paths(tmp_path: Path, name: str) -> None:
    receive.Receiver(tmp_path, EXPECT).start()
    with pytest.raises(UsageError):
        receive.put(tmp_path, name, b64(b"x"), wait=0)


def test_put_needs_a_receiver_in_this_pod(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="no receive-yamls is running"):
        receive.put(tmp_path, "a.yaml", b64(b"x"), wait=0)
    (tmp_path / ".receiving").write_text("another-pod/1/1")
    with pytest.raises(ClusterError, match="no receive-yamls is running"):
        receive.complete(tmp_path, wait=0)


def test_upload_job_argv_is_what_receive_yamls_accepts(tmp_path: Path) -> None:
    from cng_datasets.cli.cluster import receive_yamls
    from cng_datasets.k8s import manifests

    argv = list(manifests.upload_argv())
    assert argv[:2] == ["cng-datasets", "receive-yamls"]
    ctx = receive_yamls.make_context("receive-yamls", argv[2:])
    assert ctx.params["directory"] == "/yamls" and ctx.params["timeout"] == 3600
    assert ctx.params["expect"].split(",") == [*manifests.JOB_FILES.values(), "plan.json"]
    for cmd in receive.put_commands("/yamls", "a.yaml", b"x" * 5000) + [receive.complete_command("/yamls")]:
        receive_yamls.make_context("receive-yamls", cmd[2:])  # parses


def test_console_script_end_to_end(tmp_path: Path, cli_run) -> None:
    """The real console script: a receiver process, then puts and the marker as exec would run them."""
    d = tmp_path / "yamls"
    exe = [sys.executable, "-m", "cng_datasets"]
    receiver = subprocess.Popen(
        exe + ["receive-yamls", "--dir", str(d), "--expect", "a.yaml,b.yaml", "--timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for name, data in (("a.yaml", b"kind: Job\n" * 500), ("b.yaml", b"kind: Job\n")):
            for cmd in receive.put_commands(str(d), name, data):
                proc = cli_run(*cmd[1:])
                assert proc.returncode == 0, proc.stderr
        proc = cli_run(*receive.complete_command(str(d))[1:])
        assert proc.returncode == 0, proc.stderr
        _, err = receiver.communicate(timeout=30)
    finally:
        receiver.kill()
        receiver.wait()
    assert receiver.returncode == 0, err
    assert (d / "a.yaml").read_bytes() == b"kind: Job\n" * 500

    proc = cli_run("receive-yamls", "--dir", str(tmp_path / "empty"), "--expect", "a.yaml", "--timeout", "0.3")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == "error: timed out after 0.3 s waiting for a.yaml"
