"""Where raw files come from, and proof that they are the right files.

Raw files are looked for in this order:
1. `GLASSGPT_MIRROR`, a read-only folder of upstream files by their own names;
2. the data dir's download cache, `<data dir>/downloads/`;
3. a download from the canonical URL.
Every file with a known SHA-256 is checked wherever it came from; a file that
does not match is never used (a bad cached or downloaded copy is deleted).

Preparation reads files in chunks of at most `prepare_chunk_bytes()` bytes
(`GLASSGPT_PREPARE_CHUNK_BYTES`, default 8 MiB), never a whole corpus at once:
its memory peaks at a few chunks (for enwik8 about 4x: the compressed read, the
inflated chunk and their copies), whatever the size of the corpus.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from glassgpt.atomic import atomic_write
from glassgpt.errors import RunError, UsageError
from glassgpt.safe_read import open_regular

DEFAULT_CHUNK_BYTES = 8 << 20
HASH_READ_BYTES = 1 << 20


def data_dir() -> Path:
    return Path(os.environ.get("GLASSGPT_DATA_DIR", Path.home() / ".cache" / "glassgpt")).expanduser()


def mirror_dir() -> Path | None:
    m = os.environ.get("GLASSGPT_MIRROR")
    return Path(m).expanduser() if m else None


def downloads_dir() -> Path:
    return data_dir() / "downloads"


def prepare_chunk_bytes() -> int:
    """The most bytes of raw data preparation holds at once (`GLASSGPT_PREPARE_CHUNK_BYTES`)."""
    raw = os.environ.get("GLASSGPT_PREPARE_CHUNK_BYTES")
    if raw is None:
        return DEFAULT_CHUNK_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"GLASSGPT_PREPARE_CHUNK_BYTES must be a whole number of bytes above 0, got {raw!r}")
    return value


@dataclass(frozen=True)
class RawFile:
    """An upstream file: its own name, where it is published, and its SHA-256 (or, for a
    file on GitHub whose SHA-256 is not known, its git blob id: SHA-1 of
    `b"blob <size>\0" + content`, as the repository's tree records it)."""

    name: str
    url: str
    sha256: str | None = None
    git_blob_sha1: str | None = None

    @property
    def checksum(self) -> str:
        """The checksum a copy must match, in words."""
        return f"SHA-256 {self.sha256}" if self.sha256 else f"git blob id {self.git_blob_sha1}"


TINY_SHAKESPEARE = RawFile(
    name="tinyshakespeare.txt",
    url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
)


def sha256_of(path: Path) -> str:
    """The SHA-256 of a regular file, read a piece at a time (a pipe or a device is refused)."""
    with open_regular(path) as (f, _):
        return _digest(f, hashlib.sha256()).hexdigest()


def _digest(f, h):
    read_size = min(HASH_READ_BYTES, prepare_chunk_bytes())
    for chunk in iter(lambda: f.read(read_size), b""):
        h.update(chunk)
    return h


def git_blob_sha1_of(path: Path) -> str:
    """The id git gives the file's content (what `git hash-object` prints)."""
    with open_regular(path) as (f, size):
        return _digest(f, hashlib.sha1(f"blob {size}\0".encode())).hexdigest()


def _verified(path: Path, raw: RawFile) -> bool:
    if raw.sha256 is not None:
        return sha256_of(path) == raw.sha256
    return raw.git_blob_sha1 is None or git_blob_sha1_of(path) == raw.git_blob_sha1


def find_raw_file(raw: RawFile, download: bool = True) -> Path:
    """The path of a verified copy of `raw`: from the mirror, the cache, or downloaded."""
    mirror = mirror_dir()
    if mirror is not None and (mirror / raw.name).is_file():
        path = mirror / raw.name
        if not _verified(path, raw):
            raise RunError(f"{path} does not match its {raw.checksum}: the mirror copy is corrupt, replace it")
        return path
    cached = downloads_dir() / raw.name
    if cached.is_file():
        if _verified(cached, raw):
            return cached
        cached.unlink()  # a corrupt or truncated copy is never used
    if not download:
        raise RunError(f"{raw.name} not found: place it in $GLASSGPT_MIRROR or at {cached}")
    return _download(raw, cached)


def _download(raw: RawFile, dest: Path) -> Path:
    """Download `raw` to `dest` through a temporary name (`glassgpt.atomic`): an interrupted
    or unverified download leaves nothing behind."""

    def fetch_verified(part: Path) -> None:
        try:
            with urllib.request.urlopen(raw.url, timeout=30) as response, open(part, "wb") as f:
                shutil.copyfileobj(response, f, prepare_chunk_bytes())
        except (urllib.error.URLError, OSError) as e:
            raise RunError(
                f"could not download {raw.name} from {raw.url} ({getattr(e, 'reason', e)}); "
                f"without network, place the file at {dest} or in a folder named by GLASSGPT_MIRROR"
            ) from None
        if not _verified(part, raw):
            raise RunError(f"downloaded {raw.name} does not match its {raw.checksum}: try again later")

    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dest, fetch_verified)
    return dest


def discard_if_cached(path: Path) -> None:
    """Delete a raw file found bad after its checksum passed, unless it is the user's mirror copy."""
    if path.parent == downloads_dir():
        path.unlink(missing_ok=True)
