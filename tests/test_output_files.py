"""Outputs are all or nothing: lock per folder, signal-safe commit, stale outputs removed,
no staging or empty folder left, links and special files never replaced (issue 15)."""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from cli_output import message_lines

from fixture_models import fixture_path
from tflite_quantmcu.errors import OutputBusyError, OutputError
from tflite_quantmcu.output_files import (MANIFEST_NAME, STAGING_PREFIX, lock_output_directory,
                                          write_bytes_atomically, write_outputs_atomically)

MODEL = fixture_path("fashion_mnv2_r96_int8.tflite")
STEM = "fashion_mnv2_r96_int8"
SET_A = {"model.tflite": b"model A", "report.json": b"{}\n", "model.plan.json": b"plan A"}
SET_B = {"model.tflite": b"model B", "report.json": b"{\"b\": 1}\n"}


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name != MANIFEST_NAME}


def _cli(*args, env_code: str = "") -> subprocess.CompletedProcess:
    """The CLI in a child; `env_code` runs first (to inject a signal at a chosen point)."""
    code = textwrap.dedent(env_code) + \
        "\nimport sys\nfrom tflite_quantmcu.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                          text=True, check=False, timeout=300)


PATCH_INT8_SET = [f"{STEM}.patch-int8.tflite", f"{STEM}_op_resolver.h", f"{STEM}_model_data.h",
                  f"{STEM}_model_data.cc", "report.json", "report.md", "patch_candidates.json",
                  "memory_per_layer.png", "patch_grid.png"]


def _convert_args(out: Path) -> list:
    return ["convert", MODEL, "--out", out, "--sram", "256KB", "--policy", "patch-int8",
            "--no-tflm", "--no-verify"]


# -- commit -----------------------------------------------------------------------------------
def test_second_set_replaces_the_first_and_removes_its_stale_files(tmp_path):
    write_outputs_atomically(directory=tmp_path, files=SET_A)
    (tmp_path / "notes.txt").write_text("mine")
    write_outputs_atomically(directory=tmp_path, files=SET_B)
    assert _contents(tmp_path) == {**SET_B, "notes.txt": b"mine"}
    assert json.loads((tmp_path / MANIFEST_NAME).read_text()) == sorted(SET_B)


def test_manifest_naming_files_outside_the_folder_is_ignored(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST_NAME).write_text(json.dumps(["../victim.txt", "/etc/passwd", "..", 7]))
    write_outputs_atomically(directory=out, files=SET_B)
    assert victim.read_text() == "keep"


@pytest.mark.parametrize("kind", ["symlink", "directory", "fifo"])
def test_output_name_that_is_not_a_regular_file_is_refused(tmp_path, kind):
    write_outputs_atomically(directory=tmp_path, files=SET_A)
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("not yours")
    (tmp_path / "report.json").unlink()
    if kind == "symlink":
        (tmp_path / "report.json").symlink_to(elsewhere)
    elif kind == "directory":
        (tmp_path / "report.json").mkdir()
    else:
        os.mkfifo(tmp_path / "report.json")
    with pytest.raises(OutputError, match="report.json: is a"):
        write_outputs_atomically(directory=tmp_path, files=SET_B)
    assert (tmp_path / "model.tflite").read_bytes() == b"model A"
    assert elsewhere.read_text() == "not yours"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(STAGING_PREFIX)]


def test_failed_rename_restores_the_previous_set(tmp_path, monkeypatch):
    write_outputs_atomically(directory=tmp_path, files=SET_A)
    real_replace, calls = os.replace, []

    def failing_replace(src, dst):
        calls.append(dst)
        if Path(dst).name == "report.json" and Path(dst).parent == tmp_path:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OutputError, match="previous outputs were kept"):
        write_outputs_atomically(directory=tmp_path, files=SET_B)
    monkeypatch.setattr(os, "replace", real_replace)
    assert _contents(tmp_path) == SET_A
    assert any(Path(c).name == "model.tflite" and Path(c).parent == tmp_path for c in calls), \
        "the failure came after part of the new set was in place"


def test_stale_staging_of_a_killed_run_is_removed(tmp_path):
    (tmp_path / f"{STAGING_PREFIX}dead").mkdir()
    (tmp_path / f"{STAGING_PREFIX}dead" / "x").write_bytes(b"half")
    write_outputs_atomically(directory=tmp_path, files=SET_B)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([MANIFEST_NAME, *SET_B])


# -- lock -------------------------------------------------------------------------------------
def test_lock_is_exclusive_and_released(tmp_path):
    with lock_output_directory(directory=tmp_path):
        with pytest.raises(OutputBusyError, match="another convert"):
            with lock_output_directory(directory=tmp_path):
                pass
    with lock_output_directory(directory=tmp_path) as out:
        out.commit(files=SET_B)
    assert _contents(tmp_path) == SET_B


def test_convert_into_a_locked_folder_is_refused(tmp_path):
    out = tmp_path / "out"
    write_outputs_atomically(directory=out, files=SET_A)
    with lock_output_directory(directory=out):   # another convert holding it
        proc = _cli(*_convert_args(out))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and "another convert" in proc.stderr
    assert _contents(out) == SET_A


def test_failed_lock_of_a_new_folder_removes_what_it_created(tmp_path):
    target = tmp_path / "a" / "b"
    with pytest.raises(RuntimeError):
        with lock_output_directory(directory=target):
            raise RuntimeError("a step failed")
    assert not (tmp_path / "a").exists()


# -- convert: stale outputs, signals ---------------------------------------------------------
def test_convert_removes_a_plan_left_by_an_earlier_policy(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{STEM}.bitwidth_plan.json").write_text("{}")
    proc = _cli(*_convert_args(out))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST_NAME, *PATCH_INT8_SET])


INTERRUPT_IN_STEP = """
import os, signal
import tflite_quantmcu.pipeline as c
def interrupted(conv):
    os.kill(os.getpid(), signal.{sig})
    raise AssertionError("the signal should have ended the run")
c.PIPELINE = tuple(interrupted if s is c.serialize_outputs else s for s in c.PIPELINE)
"""


@pytest.mark.parametrize("sig, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_signal_mid_convert_exits_128_plus_signal_and_writes_nothing(tmp_path, sig, code):
    out = tmp_path / "new" / "out"
    proc = _cli(*_convert_args(out), env_code=INTERRUPT_IN_STEP.format(sig=sig))
    assert proc.returncode == code, proc.stderr
    assert message_lines(proc.stderr) == \
        [f"error: interrupted by {sig}; outputs are written whole or not at all"]
    assert not (tmp_path / "new").exists()


INTERRUPT_BETWEEN_RENAMES = """
import os, signal
real_replace = os.replace
def replace_then_signal(src, dst):
    real_replace(src, dst)
    if os.path.basename(os.path.dirname(os.fspath(src))) == "new":
        os.kill(os.getpid(), signal.{sig})   # after the first output is in place
os.replace = replace_then_signal
"""


@pytest.mark.parametrize("sig, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_signal_between_final_renames_leaves_the_whole_set(tmp_path, sig, code):
    out = tmp_path / "out"
    write_outputs_atomically(directory=out, files={"report.json": b"old"})
    proc = _cli(*_convert_args(out), env_code=INTERRUPT_BETWEEN_RENAMES.format(sig=sig))
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: interrupted by {sig}")
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([MANIFEST_NAME, *PATCH_INT8_SET]), names
    report = json.loads((out / "report.json").read_text())
    assert report["patch_plan"]["split_op"] is not None


def test_sigterm_without_a_handler_still_completes_the_commit(tmp_path):
    """API use (no CLI handler): the default SIGTERM action runs only after the commit."""
    code = INTERRUPT_BETWEEN_RENAMES.format(sig="SIGTERM") + textwrap.dedent(f"""
        from tflite_quantmcu.output_files import write_outputs_atomically
        write_outputs_atomically(directory={str(tmp_path)!r}, files={SET_A!r})
        print("not reached")
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=120)
    assert proc.returncode == -signal.SIGTERM and "not reached" not in proc.stdout
    assert _contents(tmp_path) == SET_A


# -- single files (analyze --json) ------------------------------------------------------------
def test_json_through_a_symlink_writes_the_target_and_keeps_the_link(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    write_bytes_atomically(data=b"new", path=link)
    assert link.is_symlink() and target.read_bytes() == b"new"


def test_json_into_a_symlink_loop_is_refused(tmp_path):
    (tmp_path / "a.json").symlink_to(tmp_path / "b.json")
    (tmp_path / "b.json").symlink_to(tmp_path / "a.json")
    with pytest.raises(OutputError, match="loop"):
        write_bytes_atomically(data=b"x", path=tmp_path / "a.json")


def test_json_into_a_fifo_is_written_through(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    write_bytes_atomically(data=b'{"a": 1}\n', path=fifo)
    reader.join(timeout=30)
    assert received == [b'{"a": 1}\n']
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_json_to_dev_full_fails_and_keeps_the_device():
    before = os.lstat("/dev/full")
    proc = _cli("analyze", fixture_path("conv_chain.tflite"), "--json", "/dev/full")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: /dev/full: cannot be written")
    after = os.lstat("/dev/full")
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == before.st_rdev
    assert after.st_ino == before.st_ino


def test_replaced_json_keeps_the_file_mode(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    path.chmod(0o640)
    write_bytes_atomically(data=b"new", path=path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
