"""A Hugging Face hub dataset as a corpus, streamed with `datasets` and shuffled with its buffer."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlparse

from tasks.core.errors import UserError
from tasks.seeds.documents import CorpusOptions, Document, Rejected, Wanted, record_to_document

# `datasets` builders that stream local files given as hf_data_files (hf:json, hf:parquet...).
PACKAGED_BUILDERS = {"json", "parquet", "csv", "text", "arrow"}


@dataclass
class HubCorpus:
    """A hub dataset streamed with `datasets` and shuffled with its shuffle buffer."""

    dataset_id: str
    opts: CorpusOptions
    description: str = ""
    stats: dict = field(default_factory=lambda: {"documents_read": 0})

    def __post_init__(self):
        self.seed_source = f"hf:{self.dataset_id}"
        self.description = f"Hugging Face dataset {self.dataset_id} (streamed)"
        self._dataset = self._load()

    def _fail(self, exc: BaseException | str) -> UserError:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return UserError(f"cannot stream Hugging Face dataset {self.dataset_id!r}: {detail}")

    def _load(self):
        if self.dataset_id not in PACKAGED_BUILDERS:  # those read local data_files: no hub involved
            _hub_preflight(self.dataset_id)
        import datasets

        try:
            ds = datasets.load_dataset(
                self.dataset_id, name=self.opts.hf_name, data_dir=self.opts.hf_data_dir,
                data_files=self.opts.hf_data_files, split=self.opts.hf_split, streaming=True,
            )
        except Exception as exc:  # datasets raises many types (ConnectionError, FileNotFoundError, ValueError...)
            raise self._fail(exc) from None
        names = getattr(ds, "column_names", None)
        if names is not None:
            missing = self.opts.missing_columns(names)
            if missing:
                raise UserError(f"Hugging Face dataset {self.dataset_id!r} has no column {missing[0]!r} "
                                f"(columns: {', '.join(names)}); set the matching *_column option")
        return ds.shuffle(seed=self.opts.random_seed, buffer_size=self.opts.shuffle_buffer)

    def documents(self, pass_no: int, wanted: Wanted) -> Iterator[Document | Rejected]:
        self._dataset.set_epoch(pass_no)
        rows = iter(self._dataset)
        n = 0
        while True:
            try:
                record = next(rows)
            except StopIteration:
                return
            except Exception as exc:  # network loss mid-stream
                raise self._fail(exc) from None
            if n == 0 and pass_no == 0 and self.opts.content_column not in record:
                raise UserError(f"Hugging Face dataset {self.dataset_id!r} has no column "
                                f"{self.opts.content_column!r} (columns: {', '.join(record)})")
            item = record_to_document(f"{self.dataset_id}#{pass_no}:{n}", record, self.opts, wanted)
            n += 1
            self.stats["documents_read"] += 1
            if item is not None:
                yield item


def _hub_preflight(dataset_id: str) -> None:
    """Fail in seconds, not after huggingface_hub's ~25 s of retries, when the hub is unreachable."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        raise UserError(f"cannot stream Hugging Face dataset {dataset_id!r}: HF_HUB_OFFLINE is set")
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return  # a proxy decides reachability; let the library try
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise UserError(
            f"cannot stream Hugging Face dataset {dataset_id!r}: {host} is unreachable ({exc.strerror or exc}); "
            "use a local directory, JSONL or Parquet source offline"
        ) from None
