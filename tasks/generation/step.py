"""The generation stage as Prefect task runs: per seed shard, `generate-shard` (the teacher)
then `clean-shard` (the per-row cleaning that needs only that shard, in a worker process).

A task run is a shard of seeds (hundreds to thousands of teacher requests, fanned out with
asyncio inside it), never one request. Shards start as the seed sampler writes them, and
run in this process over one teacher session, or each as a flow run of the shard
deployment (flows/shard_worker.py) on any worker of its pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from pathlib import Path

import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.cache_policies import INPUTS, NO_CACHE

from tasks.core import progress
from tasks.core.errors import UserError
from tasks.core.parquet_io import file_sha256, write_parquet_atomic
from tasks.generation import repair
from tasks.generation.shard import generate_shard
from tasks.generation.failed_rows import recovered, retryable_failure_ids
from tasks.generation.shard_job import GlobalRateLimit, ShardJob, summary_path
from tasks.generation.prep_worker import prepare_shard, validation_audit_path
from tasks.generation.stage_progress import ShardProgress
from tasks.generation.shard_prep import PrepSettings, prep_pool, prepared_path
from tasks.teacher.limits import prefect_rate_limit_permits
from tasks.teacher.tokens import token_counter
from tasks.teacher.session import TeacherConfig, TeacherSession

# Bump when a change to generation would make cached shard results wrong.
GENERATION_CACHE_VERSION = "1"

# The session (client, limiter, reply cache) is not an input: the seeds and the config are.
SHARD_CACHE_POLICY = INPUTS - "session"


@task(
    name="generate-shard",
    cache_policy=SHARD_CACHE_POLICY,
    persist_result=True,
    version=GENERATION_CACHE_VERSION,
)
async def generate_shard_task(
    seeds_path: str, seeds_sha256: str, teacher_cfg: TeacherConfig, work_dir: str, session=None
) -> dict:
    """One shard of teacher calls. Cached on its inputs (the seed file's checksum and the
    teacher config), so a rerun of a finished shard costs nothing; unfinished shards are
    resumed request by request from the teacher session's reply cache."""
    logger = get_run_logger()
    name = Path(seeds_path).stem
    failures_path = Path(work_dir) / "failures" / f"{name}.parquet"
    retried = retryable_failure_ids(failures_path)  # a rerun: what failed for a passing reason last time
    summary = await generate_shard(
        Path(seeds_path),
        session,
        teacher_cfg,
        pairs_path=Path(work_dir) / "pairs" / f"{name}.parquet",
        failures_path=failures_path,
    )
    summary["teacher_failures_retried"] = len(retried)
    summary["teacher_failures_recovered"] = recovered(retried, failures_path)
    t = summary["teacher"]
    logger.info(
        "%s: %d seeds -> %d pairs; teacher failures %s; parse failures %s",
        name, summary["seeds"], summary["pairs"], t["dropped"], summary["parse"]["dropped"],
    )
    return summary


def shard_result_cache(work_dir: Path):
    # Shard cache records live beside the data they describe, so deleting the output resets them too.
    return SHARD_CACHE_POLICY.configure(key_storage=str((work_dir / "results").resolve()))


def shard_is_staged(work_dir: Path, seeds_path: str) -> bool:
    name = Path(seeds_path).stem
    return all((work_dir / sub / f"{name}.parquet").exists() for sub in ("pairs", "failures"))


def cached_shard_task(work_dir: Path, seeds_path: str):
    """The shard task with its result cache beside the data; a cached result is only good
    while the files it describes are still there, and while none of its seeds failed at the
    teacher for a passing reason (a rerun tries those again; the reply cache answers the rest)."""
    name = Path(seeds_path).stem
    rerun = not shard_is_staged(work_dir, seeds_path) or bool(retryable_failure_ids(work_dir / "failures" / f"{name}.parquet"))
    return generate_shard_task.with_options(refresh_cache=rerun, cache_policy=shard_result_cache(work_dir))


async def ensure_rate_limit(limit: GlobalRateLimit) -> None:
    """Create (or resize) the global rate limit: `limit` slots that free up at limit/60 per second."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        await client.upsert_global_concurrency_limit_by_name(
            limit.name, limit.requests_per_minute, slot_decay_per_second=limit.requests_per_minute / 60.0
        )


@task(name="clean-shard", cache_policy=NO_CACHE)
async def clean_shard_task(summary: dict, work_dir: Path, pool: Executor) -> dict:
    """The per-row cleaning of one landed shard (validation in the sandbox, exact-dedup
    digests, near-dedup signatures, benchmark matches) in a worker process; the decisions
    that need every shard come later."""
    out = prepared_path(work_dir, summary["shard"])
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(pool, prepare_shard, summary["pairs_path"], str(out))
    get_run_logger().info(
        "%s: %d pairs %s; CPU s %s", summary["shard"], summary["pairs"],
        "already prepared" if result["reused"] else "prepared", result.get("cpu_seconds", {}),
    )
    known = {k: result[k] for k in ("decontamination_index", "near_dedup_lsh") if k in result}
    if "validate" in result:  # the shard's validation counts, and where its audit is
        known.update(validate=result["validate"], validate_audit_path=validation_audit_path(str(out)))
    return {**summary, "prepared_path": str(out), "prep_cpu_seconds": result.get("cpu_seconds", {}), **known}


@task(name="repair-shard", cache_policy=NO_CACHE)
async def repair_shard_task(summary: dict, teacher: TeacherConfig, work_dir: Path, pool: Executor, session) -> dict:
    """The shard's repairable validation failures back to the teacher once, with their error;
    the corrected pairs validated and cleaned like the rest (tasks/generation/repair.py)."""
    failed = await asyncio.to_thread(repair.repairable_failures, summary)
    first_validation = summary["validate"]
    if failed.num_rows == 0:
        return {**summary, "validate": repair.merged_validation(first_validation, None, Counter(), 0, Counter())}
    seed_indexes, messages = repair.repair_requests(failed, teacher.output_format)
    replies, teacher_stats = await session.complete_messages(seed_indexes, messages)
    table, lost = repair.repaired_pairs(failed, replies, teacher.output_format)
    name = summary["shard"]
    second = None
    audit_path = validation_audit_path(str(prepared_path(work_dir, f"{name}.merged")))
    prepared = summary["prepared_path"]
    if table.num_rows:
        pairs = work_dir / "pairs" / f"{name}.repair.parquet"
        await asyncio.to_thread(write_parquet_atomic, table.cast(pq.read_schema(summary["pairs_path"])), pairs)
        out = prepared_path(work_dir, f"{name}.repair")
        result = await asyncio.get_running_loop().run_in_executor(pool, prepare_shard, str(pairs), str(out))
        second = result["validate"]
        prepared = await asyncio.to_thread(repair.merged_prepared, summary["prepared_path"], str(out),
                                           prepared_path(work_dir, f"{name}.merged"))  # fmt: skip
    repaired_ids = set(table.column("id").to_pylist())
    first_reasons = Counter(r for i, r in zip(failed["id"].to_pylist(), failed["reason"].to_pylist()) if i in repaired_ids)
    validation = repair.merged_validation(first_validation, second, first_reasons, failed.num_rows, lost)
    audit = await asyncio.to_thread(
        repair.merged_audit, summary["validate_audit_path"],
        validation_audit_path(str(prepared_path(work_dir, f"{name}.repair"))) if second else None, repaired_ids,
        Path(audit_path),
    )
    get_run_logger().info("%s: repair round: %s", name, validation["extra"]["repair"])
    return {**summary, "prepared_path": prepared, "validate": validation, "validate_audit_path": audit,
            "teacher": repair.fold_usage(summary["teacher"], teacher_stats.as_dict())}


def known_in_workers(summaries: list[dict]) -> dict:
    """What the shard workers reported besides rows: the benchmark index they matched with
    (decontamination_index) and the near-dedup LSH banding (near_dedup_lsh)."""
    known: dict = {}
    for summary in summaries:
        for key in ("decontamination_index", "near_dedup_lsh"):
            if key in summary:
                known.setdefault(key, summary[key])
    return known


async def generate_all(
    shards: asyncio.Queue,
    teacher: TeacherConfig,
    work_dir: Path,
    cache_path: Path,
    parallel: int,
    settings: PrepSettings,
    rate_limit: GlobalRateLimit | None = None,
    shard_deployment: str | None = None,
    expected_replies: int | None = None,
    prep_workers: int | None = None,
    ledger_path: Path | None = None,
    seeds_per_shard: int | None = None,
) -> AsyncIterator[dict]:
    """Every seed shard put on `shards` (until END_OF_SEEDS) through the teacher, `parallel`
    shards in flight, each landed shard cleaned per row in a worker process while the
    teacher answers the next ones. Yields the shard summaries in seed order, each as soon
    as it and every shard before it are cleaned."""
    expected = -(-expected_replies // seeds_per_shard) if expected_replies and seeds_per_shard else None
    answered = await ShardProgress("generation", expected).start()
    cleaned = await ShardProgress("cleaning", expected).start()
    announced = 0
    gate = asyncio.Semaphore(parallel)  # back-pressure: seeds wait on disk, not in memory
    if rate_limit is not None:
        await ensure_rate_limit(rate_limit)

    async def finished() -> None:
        progress.report("shards", 1, total=max(announced, answered.done + 1))
        await answered.advance()

    async with contextlib.AsyncExitStack() as stack:
        pool = _CleaningPool(settings, prep_workers, stack)
        permits = prefect_rate_limit_permits(rate_limit.name, rate_limit.batch_size()) if rate_limit else None
        opened: list[TeacherSession] = []
        opening = asyncio.Lock()
        warming = asyncio.ensure_future(asyncio.to_thread(_warm_teacher_client, teacher))
        repairing = settings.validation is not None and settings.validation.repair

        async def teacher_session() -> TeacherSession:
            # Opened with the first shard (or, with shards on other workers, the first repair):
            # a run whose seeds were all generated before never touches the teacher (nor needs its key).
            async with opening:
                if not opened:
                    await warming
                    opened.append(await stack.enter_async_context(
                        TeacherSession(teacher, cache_path=cache_path, permits=permits, ledger_path=ledger_path)
                    ))
                    opened[0].expected_replies = expected_replies  # the CLI bar's total
            return opened[0]

        if shard_deployment:
            await _check_deployment(shard_deployment)
            generate = functools.partial(
                _shard_on_worker, teacher=teacher, work_dir=work_dir, cache_path=cache_path, rate_limit=rate_limit,
                deployment=shard_deployment, ledger_path=ledger_path,
            )
        else:

            async def generate(path: str) -> dict:
                shard_task = cached_shard_task(work_dir, path)
                return await shard_task(path, file_sha256(path), teacher, str(work_dir), session=await teacher_session())

        async def one(path: str) -> dict:
            async with gate:
                pool.start_soon()
                summary = await generate(path)
            await finished()
            summary = await clean_shard_task(summary, work_dir, pool.start())
            if repairing:
                summary = await repair_shard_task(summary, teacher, work_dir, pool.start(), await teacher_session())
            await cleaned.advance()
            return summary

        # Shards start as their seed files arrive; their summaries leave in seed order.
        running: asyncio.Queue = asyncio.Queue()
        started: list[asyncio.Future] = []

        async def start_shards() -> None:
            nonlocal announced
            try:
                while (path := await shards.get()) is not None:
                    announced += 1
                    for stage in (answered, cleaned):
                        stage.expect_at_least(announced)
                    started.append(asyncio.ensure_future(one(path)))
                    running.put_nowait(started[-1])
            finally:
                running.put_nowait(None)

        starter = asyncio.ensure_future(start_shards())
        try:
            while (shard := await running.get()) is not None:
                yield await shard
            await starter
            for stage in (answered, cleaned):
                await stage.finish()
        finally:
            pool.closing = True
            for pending in [starter, *started]:
                pending.cancel()
            await asyncio.gather(starter, *started, return_exceptions=True)


def _warm_teacher_client(teacher: TeacherConfig) -> None:
    """Load, while the first seed shard is being sampled, what the teacher session would
    otherwise load on the event loop just before the first request: the tokenizer's
    encoding (~0.7 s) and aiohttp's connector with its SSL contexts (~0.5 s)."""
    import aiohttp.connector  # noqa: F401

    token_counter(teacher.model)


class _CleaningPool:
    """The clean-shard worker processes, started a moment after the first shard's requests
    went out (or when a shard lands first): their start-up (imports, the benchmark index,
    warm sandboxes) then overlaps the wait for replies instead of delaying the first request
    on a machine with few cores."""

    DELAY_S = 1.0

    def __init__(self, settings: PrepSettings, workers: int | None, stack: contextlib.AsyncExitStack):
        self._args = (settings, workers)
        self._stack = stack
        self._pool: Executor | None = None
        self._scheduled = False
        self.closing = False

    def start_soon(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(self.DELAY_S, self._start_unless_closing)

    def _start_unless_closing(self) -> None:
        if not self.closing:
            self.start()

    def start(self) -> Executor:
        if self._pool is None:
            self._pool = self._stack.enter_context(prep_pool(*self._args))
        return self._pool


async def _check_deployment(name: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            await client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise UserError(
                f"shard deployment {name!r} does not exist on this Prefect server: run `prefect deploy --all`"
            ) from None


async def _shard_on_worker(
    path: str, teacher, work_dir: Path, cache_path: Path, rate_limit, deployment: str, ledger_path: Path | None = None
) -> dict:
    """One shard as a flow run of the shard deployment, picked up by any worker of its pool.

    The workers share the filesystem (seed files, staged pairs, the reply cache) and the
    teacher budget (the global rate limit). A shard's summary comes back as a JSON file,
    so the parent needs no access to the children's result storage. The idempotency key
    makes a retried parent reuse the shard runs it already created instead of running
    a shard twice."""
    from prefect.deployments import run_deployment
    from prefect.runtime import flow_run as current_run

    parent = current_run.get_id() or "local"
    name = Path(path).stem
    job = ShardJob(
        seeds_path=str(Path(path).resolve()),
        seeds_sha256=file_sha256(path),
        teacher=teacher,
        work_dir=str(work_dir.resolve()),
        cache_path=str(cache_path.resolve()),
        rate_limit=rate_limit,
        ledger_path=str(Path(ledger_path).resolve()) if ledger_path is not None else None,
    )
    run = await run_deployment(
        deployment,
        parameters={"job": job.model_dump(mode="json")},
        flow_run_name=f"{name}",
        idempotency_key=f"{parent}:{name}:{job.seeds_sha256[:16]}",
        timeout=None,
        poll_interval=1,
    )
    if run.state is None or not run.state.is_completed():
        state = run.state.name if run.state else "unknown"
        raise RuntimeError(f"shard {name} ended {state} (flow run {run.id})")
    return json.loads(Path(summary_path(job.work_dir, name)).read_text())
