"""enwik8: the first 10^8 bytes of an English Wikipedia XML dump (the Hutter Prize
file), modelled one byte at a time, with the standard split: the first 90M bytes
train, the next 5M validation, the last 5M test.

The zip is streamed: its member is decompressed `prepare_chunk_bytes()` at a
time straight into the split files, so memory stays flat whatever the size.

Verification, in layers:
- `enwik8.zip` must match a SHA-256 (the same value is pinned by several
  independent public projects that fetch http://mattmahoney.net/dc/enwik8.zip;
  we could not download the file here to measure it ourselves);
- the member `enwik8` must be exactly 100,000,000 bytes, pass the zip's own
  CRC-32 (checked by `zipfile` as the stream ends), and match the SHA-256 of
  the unzipped file, also pinned by several independent projects.
A file failing any check is never used: the partial split files are thrown away.
"""

from __future__ import annotations

import hashlib
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glassgpt.data.sources import RawFile, discard_if_cached, find_raw_file, prepare_chunk_bytes
from glassgpt.data.writing import SplitWriter
from glassgpt.errors import RunError
from glassgpt.progress import progress
from glassgpt.tokenizer import get_tokenizer

ENWIK8_ZIP = RawFile(
    name="enwik8.zip",
    url="http://mattmahoney.net/dc/enwik8.zip",
    sha256="547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc",
)


@dataclass(frozen=True)
class ZipMember:
    """The one file inside an archive that we use: its name, size and SHA-256."""

    name: str
    size: int
    sha256: str


ENWIK8_MEMBER = ZipMember(
    name="enwik8",
    size=100_000_000,
    sha256="2b49720ec4d78c3c9fabaee6e4179a5e997302b3a70029f30f2d582218c024a8",
)

SPLIT_PERCENT = {"train": 90, "val": 5, "test": 5}


def split_sizes(total: int) -> dict[str, int]:
    """90% / 5% / 5% of `total` bytes, in order; 10^8 bytes gives exactly 90M / 5M / 5M."""
    train = total * SPLIT_PERCENT["train"] // 100
    val = total * SPLIT_PERCENT["val"] // 100
    return {"train": train, "val": val, "test": total - train - val}


def prepare_enwik8(out: Path, chunk_bytes: int | None = None, **_) -> dict:
    """Unzip enwik8 into `out/{train,val,test}.bin` (one uint8 token per byte)."""
    chunk_bytes = chunk_bytes or prepare_chunk_bytes()
    zip_path = find_raw_file(ENWIK8_ZIP)
    member = ENWIK8_MEMBER
    try:
        counts, digest = _unzip_into_splits(zip_path, member, out, chunk_bytes)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        discard_if_cached(zip_path)
        raise RunError(f"{zip_path} is corrupt ({e}): replace it with a fresh copy of {ENWIK8_ZIP.url}") from None
    if digest != member.sha256:
        discard_if_cached(zip_path)
        raise RunError(f"{member.name} inside {zip_path} does not match its SHA-256 {member.sha256}: "
                       f"replace the zip with a fresh copy of {ENWIK8_ZIP.url}")
    return {"tokenizer": get_tokenizer("byte").to_dict(), "tokens": counts,
            "source_sha256": ENWIK8_ZIP.sha256, "member_sha256": member.sha256}


def _unzip_into_splits(zip_path: Path, member: ZipMember, out: Path, chunk_bytes: int) -> tuple[dict, str]:
    """Stream the member into the split files; returns the byte counts and the member's SHA-256."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(zip_path) as archive:
        info = _member_info(archive, member)
        sizes = split_sizes(info.file_size)
        with archive.open(info) as source, progress("enwik8", info.file_size, "B") as bar:
            for split, size in sizes.items():
                with SplitWriter(out / f"{split}.bin", np.uint8) as writer:
                    while writer.count < size:
                        chunk = source.read(min(chunk_bytes, size - writer.count))
                        if not chunk:
                            raise EOFError(f"{member.name} ends after {writer.count} bytes of the {split} split")
                        digest.update(chunk)
                        writer.write(chunk)
                        bar.advance(len(chunk))
            if source.read(1):  # also makes zipfile check the CRC-32 at the end of the stream
                raise zipfile.BadZipFile(f"{member.name} is longer than its recorded size")
    return sizes, digest.hexdigest()


def _member_info(archive: zipfile.ZipFile, member: ZipMember) -> zipfile.ZipInfo:
    try:
        info = archive.getinfo(member.name)
    except KeyError:
        raise zipfile.BadZipFile(f"no member named {member.name!r}") from None
    if info.file_size != member.size:
        raise zipfile.BadZipFile(f"{member.name} is {info.file_size:,} bytes, expected {member.size:,}")
    return info
