"""Datasets: find the raw files, prepare them into token files, and serve batches.

- `sources`: where raw files come from (mirror, cache, download) and their checksums;
- `prepare`: the known datasets and `prepare(name)`, atomic and idempotent; your own
  datasets (`prepare_user`), `read_meta` (checked) and `list_datasets`;
- `documents`, `user`: your own text (files, folders, jsonl, parquet, .gz, a Hugging Face
  dataset) read as documents, split by document and tokenized (`bpe:N` trained on it);
- `enwik8`, `fineweb`: the two large corpora, streamed with bounded memory;
- `writing`: token files written a piece at a time;
- `loader`: `TokenDataset`, `BatchLoader`, `Prefetcher`, `eval_windows`.

Everything is importable from `glassgpt.data` directly.
"""

from glassgpt.data.loader import BatchLoader, Prefetcher, TokenDataset, bos_token, eval_windows, windows_at
from glassgpt.data.prepare import (
    DATASETS,
    DatasetSpec,
    check_dataset_name,
    dataset_path,
    dataset_vocab_size,
    describe_dataset,
    is_prepared,
    list_datasets,
    prepare,
    prepare_user,
    read_meta,
    user_dataset_names,
)
from glassgpt.data.user import TextRequest
from glassgpt.data.sources import (
    TINY_SHAKESPEARE,
    RawFile,
    data_dir,
    downloads_dir,
    find_raw_file,
    mirror_dir,
    prepare_chunk_bytes,
    sha256_of,
)
from glassgpt.data.writing import SplitWriter, token_dtype, write_split

__all__ = [
    "BatchLoader", "Prefetcher", "TokenDataset", "bos_token", "eval_windows", "windows_at",
    "DATASETS", "DatasetSpec", "check_dataset_name", "dataset_path", "is_prepared", "prepare",
    "dataset_vocab_size", "describe_dataset", "list_datasets", "prepare_user", "read_meta", "user_dataset_names",
    "TextRequest",
    "TINY_SHAKESPEARE", "RawFile", "data_dir", "downloads_dir", "find_raw_file", "mirror_dir",
    "prepare_chunk_bytes", "sha256_of", "SplitWriter", "token_dtype", "write_split",
]
