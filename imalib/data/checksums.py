"""File checks shared by the image loaders."""

from __future__ import annotations

import hashlib
from pathlib import Path

from imalib.data.base import DataError


def md5(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def require_files(folder: Path, expected: dict[str, str | None], how_to_get: str) -> None:
    """Check that every file exists and (where an md5 is given) has that md5.

    Raises DataError naming the folder, the missing or corrupt files and how to
    obtain them; nothing is written or deleted.
    """
    missing = [name for name in expected if not (folder / name).is_file()]
    if missing:
        raise DataError(f"missing {', '.join(missing)} in {folder}. {how_to_get}")
    for name, checksum in expected.items():
        if checksum is not None and md5(folder / name) != checksum:
            raise DataError(
                f"{folder / name} has the wrong md5 (expected {checksum}): the file is corrupt or not "
                f"the official release. Delete it and fetch it again. {how_to_get}"
            )
