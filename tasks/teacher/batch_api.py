"""The provider's Batch API through the official `openai` SDK: upload, create, find, poll, download.

Only the calls batch mode needs, each one SDK call: `files.create(purpose="batch")`,
`batches.create/retrieve/cancel/list` and `files.content`. The SDK retries transient
HTTP failures itself (`max_retries`); a rejected key stops the run with the same one-line
error as live mode, and never quotes the provider's body (OpenAI echoes the key).
"""

from __future__ import annotations

from pathlib import Path

import openai

from tasks.teacher.batch_requests import CHAT_URL
from tasks.teacher.config import TeacherConfig
from tasks.teacher.credentials import aresolve_api_key, auth_error

TERMINAL = frozenset({"completed", "expired", "failed", "cancelled"})
LOCAL_ID_FIELD = "ossforge_local_id"  # batch metadata: which ledger plan a batch was made from


class BatchApi:
    """`async with BatchApi(cfg) as api:` -- one SDK client for a shard's batches."""

    def __init__(self, cfg: TeacherConfig):
        self.cfg = cfg
        self._client: openai.AsyncOpenAI | None = None
        self.calls = 0  # SDK calls made (for the benchmark and stats)

    async def __aenter__(self) -> "BatchApi":
        key = await aresolve_api_key(self.cfg)
        # The SDK insists on a key; a keyless loopback server ignores the placeholder.
        self._client = openai.AsyncOpenAI(
            base_url=self.cfg.base_url, api_key=key or "no-key", max_retries=self.cfg.max_retries,
            timeout=self.cfg.request_timeout_s,
        )
        return self

    async def __aexit__(self, *exc) -> None:
        if self._client is not None:
            await self._client.close()

    async def _call(self, method, *args, **kwargs):
        self.calls += 1
        try:
            return await method(*args, **kwargs)
        except openai.AuthenticationError:
            raise auth_error(self.cfg) from None

    async def upload(self, path: Path) -> str:
        with open(path, "rb") as fh:
            created = await self._call(self._client.files.create, file=(path.name, fh), purpose="batch")
        return created.id

    async def create(self, input_file_id: str, local_id: str):
        return await self._call(
            self._client.batches.create,
            input_file_id=input_file_id, endpoint=CHAT_URL, completion_window="24h",
            metadata={LOCAL_ID_FIELD: local_id},
        )

    async def find_created(self, input_file_id: str, local_id: str):
        """A batch already made from this input file (a kill between create and its reply), or None."""
        page = await self._call(self._client.batches.list, limit=100)
        async for batch in page:
            if batch.input_file_id == input_file_id or (batch.metadata or {}).get(LOCAL_ID_FIELD) == local_id:
                return batch
        return None

    async def retrieve(self, batch_id: str):
        return await self._call(self._client.batches.retrieve, batch_id)

    async def cancel(self, batch_id: str):
        return await self._call(self._client.batches.cancel, batch_id)

    async def download(self, file_id: str | None) -> bytes:
        if not file_id:
            return b""
        content = await self._call(self._client.files.content, file_id)
        return content.content
