"""A run folder that cannot be written, or a disk that is (nearly) full: one clear error
line, exit 2, before anything is started or written.

Tests run as root, where file modes do not stop writes: an unwritable run folder is one
whose parent is a file, and a full disk is a 200 KiB tmpfs (skipped with the reason where
mounting is not permitted, as in an unprivileged container, CI included).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import cli

TINY = """
name: tiny
sampler: grid
trial: {task: adding, hidden: 8, batches_per_epoch: 3, max_epochs: 2, val_size: 16, batch_size: 8}
space: {init: [xavier], seq_len: [4], seed: [0]}
"""


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A mounted 200 KiB tmpfs: too small for a study's stores."""
    mount = tmp_path / "full"
    mount.mkdir()
    tried = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if tried.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {tried.stderr.strip() or tried.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def assert_one_clear_line(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for word in words:
        assert word in lines[0]
    assert "trained" not in proc.stdout


def test_run_folder_under_a_file_is_refused(tmp_path: Path, spec: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the run folder's parent should be\n")
    proc = cli("run", str(spec), "--run-dir", str(blocker / "run"))
    assert_one_clear_line(proc, "--run-dir", "not a folder")
    assert blocker.read_text().startswith("a file")


@pytest.mark.slow
def test_full_disk_is_refused_before_anything_starts(spec: Path, full_disk: Path) -> None:
    proc = cli("run", str(spec), "--run-dir", str(full_disk / "run"))
    assert_one_clear_line(proc, "MiB free", "--run-dir")
    assert list(full_disk.iterdir()) == []  # no store created, nothing written
