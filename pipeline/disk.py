"""The free-space check made before a study's embedded stores are written."""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.storage import StudyError

MIN_FREE_BYTES = 64 * 2**20
"""Free space the run folder must have before a study with an embedded store starts."""


def check_space(run_dir: Path, min_free: int = MIN_FREE_BYTES) -> None:
    """Refuse to start a study whose embedded stores would fill the disk: ``run_dir`` (or
    its nearest existing parent, if it is not made yet) must have ``min_free`` bytes free.

    Raises:
        storage.StudyError: less than that is free.
    """
    folder = run_dir.resolve()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < min_free:
        raise StudyError(
            f"the run folder {str(run_dir)!r} has {free / 2**20:.1f} MiB free on its "
            f"disk ({folder}); a study needs at least {min_free // 2**20} MiB for "
            "its stores: free some space or choose another --run-dir"
        )
