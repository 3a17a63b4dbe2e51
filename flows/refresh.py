"""The OSS-Instruct refresh flow: seeds -> teacher -> pairs -> dedup -> decontamination -> shards.

Orchestration only: each step's work lives in tasks/. A Prefect task run is a shard of
seeds (hundreds to thousands of teacher requests, fanned out with asyncio inside it),
never one request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from pathlib import Path

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)
from prefect.cache_policies import INPUTS
from prefect.runtime import flow_run as prefect_flow_run
from pydantic import BaseModel, Field

from tasks.core import progress
from tasks.core.errors import UserError
from tasks.core.schema import AUDIT_SCHEMA, CLUSTER_ID, CLUSTER_SIZE, DATASET_SCHEMA
from tasks.publish.dataset_card import render_dataset_card
from tasks.decontamination.decontaminate import DecontaminationConfig, Decontaminator, decontamination_report_markdown
from tasks.decontamination.dataset import MATCH_CHUNK_ROWS
from tasks.dedup.dataset import FileSource
from tasks.dedup.exact import ExactDeduper
from tasks.generation.shard import generate_shard
from tasks.dedup.near import NearDedupConfig, plan_near_dedup
from tasks.publish.publish import publish_dataset
from tasks.seeds.sampling import SeedConfig, sample_seeds
from tasks.core.parquet_io import file_sha256, rebatch, write_parquet_atomic, write_text_atomic
from tasks.generation.shard_job import GlobalRateLimit, ShardJob, summary_path
from tasks.core.stats import StageStats, timed
from tasks.teacher.session import TeacherConfig, TeacherSession
from tasks.teacher.limits import prefect_rate_limit_permits
from tasks.publish.versions import SeedExcluder

# Bump when a change to generation would make cached shard results wrong.
GENERATION_CACHE_VERSION = "1"

# The session (client, limiter, reply cache) is not an input: the seeds and the config are.
SHARD_CACHE_POLICY = INPUTS - "session"

# Artifact keys are stable so the UI shows one evolving history per artifact.
PROGRESS_KEY = "refresh-progress"
SHARDS_KEY = "refresh-shards"
SUMMARY_KEY = "refresh-summary"
REPORT_KEY = "refresh-report"
DECONTAMINATION_KEY = "refresh-decontamination"


class RefreshConfig(BaseModel):
    """Everything a refresh needs. The CLI, prefect.yaml and the UI form all fill this one model."""

    output_dir: str = "out/oss-instruct"
    seeds: SeedConfig = Field(default_factory=lambda: SeedConfig(num_seeds=100))
    teacher: TeacherConfig
    shard_size: int = Field(1000, ge=1, description="at most this many rows per Parquet shard")
    generation_shard_size: int = Field(500, ge=1, description="seeds per generation task run")
    parallel_shards: int | None = Field(
        None, ge=1, description="generation shards in flight at once (default: enough to fill teacher.concurrency)"
    )
    near_dedup: NearDedupConfig | None = Field(default_factory=NearDedupConfig, description="None turns it off")
    decontamination: DecontaminationConfig | None = Field(
        default_factory=DecontaminationConfig, description="None turns it off"
    )
    cache_dir: str | None = Field(
        None, description="teacher reply cache directory (default OUTPUT/.cache); versions of one dataset share one"
    )
    exclude_seed_digests: list[str] = Field(
        default_factory=list,
        description="seed digest files (earlier versions' seed_digests.parquet): those seeds are not sent again",
    )
    shard_deployment: str | None = Field(
        None,
        description="run each generation shard as a flow run of this deployment (e.g. 'generate-shard/cpu'), "
        "spread over the pool's workers; None runs shards in this process",
    )
    teacher_rate_limit: GlobalRateLimit | None = Field(
        None, description="a Prefect global rate limit shared by every process sending to the teacher"
    )
    report: bool = Field(True, description="publish the markdown report artifact (dataset card, samples, charts)")


# Fields that change how fast a run goes, not what it produces.
_OPERATIONAL = {"output_dir", "parallel_shards", "cache_dir", "shard_deployment", "teacher_rate_limit", "report"}
_TEACHER_OPERATIONAL = {"concurrency", "rpm", "tpm", "rate_window_s", "max_retries", "retry_base_s", "retry_max_s",
                        "request_timeout_s", "transport", "price_per_mtok_in", "price_per_mtok_out", "max_cost_usd",
                        "max_total_tokens", "api_key_env", "api_key_secret_block", "base_url"}


_NEAR_DEDUP_OPERATIONAL = {"workers", "lsh_storage", "index_dir", "version"}


def config_fingerprint(config: RefreshConfig) -> str:
    data = config.model_dump(mode="json", exclude=_OPERATIONAL)
    data["teacher"] = {k: v for k, v in data["teacher"].items() if k not in _TEACHER_OPERATIONAL}
    if data.get("near_dedup"):
        data["near_dedup"] = {k: v for k, v in data["near_dedup"].items() if k not in _NEAR_DEDUP_OPERATIONAL}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@task(name="sample-seeds")
def sample_seeds_task(
    seed_cfg: SeedConfig, seeds_dir: Path, per_file: int, exclude_digests: list[str] | None = None
) -> tuple[list[str], dict]:
    """Sample seeds and stage them as one Parquet file per generation shard.

    Seeds whose digest is in `exclude_digests` (consumed by earlier versions) are dropped
    with a reason, so an incremental run only pays for seeds it has not seen."""
    logger = get_run_logger()
    for stale in seeds_dir.glob("shard-*.parquet"):
        stale.unlink()
    batches, stats = sample_seeds(seed_cfg, batch_size=per_file)
    excluder = SeedExcluder(exclude_digests) if exclude_digests else None
    if excluder is not None:
        batches = rebatch((excluder.filter(b) for b in batches), per_file)
    paths = []
    with timed(stats):
        for i, batch in enumerate(batches):
            paths.append(str(write_parquet_atomic(batch, seeds_dir / f"shard-{i:05d}.parquet")))
    if excluder is not None and excluder.excluded:
        stats.rows_out -= excluder.excluded
        stats.drop(SeedExcluder.REASON, excluder.excluded)
    logger.info("sampled %d seeds into %d shards; dropped %s", stats.rows_out, len(paths), dict(stats.dropped))
    return paths, stats.as_dict()


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
    summary = await generate_shard(
        Path(seeds_path),
        session,
        teacher_cfg,
        pairs_path=Path(work_dir) / "pairs" / f"{name}.parquet",
        failures_path=Path(work_dir) / "failures" / f"{name}.parquet",
    )
    t = summary["teacher"]
    logger.info(
        "%s: %d seeds -> %d pairs; teacher failures %s; parse failures %s",
        name, summary["seeds"], summary["pairs"], t["dropped"], summary["parse"]["dropped"],
    )
    return summary


def request_cache_path(config: RefreshConfig) -> Path:
    return Path(config.cache_dir or Path(config.output_dir) / ".cache") / "requests.sqlite"


def shard_result_cache(work_dir: Path):
    # Shard cache records live beside the data they describe, so deleting the output resets them too.
    return SHARD_CACHE_POLICY.configure(key_storage=str((work_dir / "results").resolve()))


def shard_is_staged(work_dir: Path, seeds_path: str) -> bool:
    name = Path(seeds_path).stem
    return all((work_dir / sub / f"{name}.parquet").exists() for sub in ("pairs", "failures"))


async def ensure_rate_limit(limit: GlobalRateLimit) -> None:
    """Create (or resize) the global rate limit: `limit` slots that free up at limit/60 per second."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        await client.upsert_global_concurrency_limit_by_name(
            limit.name, limit.requests_per_minute, slot_decay_per_second=limit.requests_per_minute / 60.0
        )


async def _generate_all(
    config: RefreshConfig, seed_paths: list[str], work_dir: Path, seed_count: int | None = None
) -> list[dict]:
    teacher = config.teacher
    parallel = config.parallel_shards or max(2, -(-teacher.concurrency // config.generation_shard_size) + 1)
    progress_id = await acreate_progress_artifact(0.0, key=PROGRESS_KEY, description="Generation shards finished")
    done = 0
    gate = asyncio.Semaphore(parallel)
    cache_path = request_cache_path(config)
    shard_cache = shard_result_cache(work_dir)
    if config.teacher_rate_limit is not None:
        await ensure_rate_limit(config.teacher_rate_limit)

    async def finished() -> None:
        nonlocal done
        done += 1
        progress.report("shards", 1, total=len(seed_paths))
        await aupdate_progress_artifact(progress_id, 100.0 * done / max(1, len(seed_paths)))

    if config.shard_deployment:
        return await _generate_on_workers(config, seed_paths, work_dir, cache_path, gate, finished)

    limit = config.teacher_rate_limit
    permits = prefect_rate_limit_permits(limit.name, limit.batch_size()) if limit is not None else None
    async with TeacherSession(teacher, cache_path=cache_path, permits=permits) as session:
        session.expected_replies = seed_count  # the CLI bar's total

        async def one(path: str) -> dict:
            # A cached result is only good while the files it describes are still there.
            shard_task = generate_shard_task.with_options(
                refresh_cache=not shard_is_staged(work_dir, path), cache_policy=shard_cache
            )
            async with gate:
                summary = await shard_task(path, file_sha256(path), teacher, str(work_dir), session=session)
            await finished()
            return summary

        return list(await asyncio.gather(*(one(p) for p in seed_paths)))


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


async def _generate_on_workers(config: RefreshConfig, seed_paths, work_dir: Path, cache_path: Path, gate, finished):
    """Each shard as a flow run of the shard deployment, picked up by any worker of its pool.

    The workers share the filesystem (seed files, staged pairs, the reply cache) and the
    teacher budget (the global rate limit). A shard's summary comes back as a JSON file,
    so the parent needs no access to the children's result storage. The idempotency key
    makes a retried parent reuse the shard runs it already created instead of running
    a shard twice."""
    from prefect.deployments import run_deployment
    from prefect.runtime import flow_run as current_run

    parent = current_run.get_id() or "local"
    await _check_deployment(config.shard_deployment)

    async def one(path: str) -> dict:
        name = Path(path).stem
        job = ShardJob(
            seeds_path=str(Path(path).resolve()),
            seeds_sha256=file_sha256(path),
            teacher=config.teacher,
            work_dir=str(work_dir.resolve()),
            cache_path=str(cache_path.resolve()),
            rate_limit=config.teacher_rate_limit,
        )
        async with gate:
            run = await run_deployment(
                config.shard_deployment,
                parameters={"job": job.model_dump(mode="json")},
                flow_run_name=f"{name}",
                idempotency_key=f"{parent}:{name}:{job.seeds_sha256[:16]}",
                timeout=None,
                poll_interval=1,
            )
        if run.state is None or not run.state.is_completed():
            state = run.state.name if run.state else "unknown"
            raise RuntimeError(f"shard {name} ended {state} (flow run {run.id})")
        summary = json.loads(Path(summary_path(job.work_dir, name)).read_text())
        await finished()
        return summary

    return list(await asyncio.gather(*(one(p) for p in seed_paths)))


def _shard_table_rows(summaries: list[dict]) -> list[dict]:
    rows = []
    for s in summaries:
        extra = s["teacher"].get("extra", {})
        rows.append(
            {
                "shard": s["shard"],
                "seeds": s["seeds"],
                "pairs": s["pairs"],
                "teacher_failures": sum(s["teacher"]["dropped"].values()),
                "parse_failures": sum(s["parse"]["dropped"].values()),
                "requests_sent": extra.get("requests", 0),
                "cache_hits": extra.get("cache_hits", 0),
                "retries": extra.get("retries_total", 0),
                "req_per_s": extra.get("req_per_s", 0.0),
                "tokens_in": extra.get("tokens_in", 0) + extra.get("cached_tokens_in", 0),
                "tokens_out": extra.get("tokens_out", 0) + extra.get("cached_tokens_out", 0),
                "cost_usd": round(extra.get("cost_usd", 0.0), 6),
                **({"worker": s.get("worker", "")} if any("worker" in x for x in summaries) else {}),
            }
        )
    return rows


def _merge_stage(name: str, dicts: list[dict]) -> StageStats:
    total = StageStats(name)
    for d in dicts:
        total.merge(StageStats.from_dict(name, d))
    return total


def _sum_extra(summaries: list[dict], key: str):
    return sum(s["teacher"].get("extra", {}).get(key, 0) or 0 for s in summaries)


@flow(name="oss-instruct-refresh", log_prints=True)
async def refresh_flow(config: RefreshConfig) -> dict:
    """Build (or rebuild) an OSS-Instruct dataset in config.output_dir; returns the manifest."""
    logger = get_run_logger()
    out = Path(config.output_dir)
    work = out / ".work"
    started = time.perf_counter()

    seed_paths, seed_stats = sample_seeds_task(
        config.seeds, work / "seeds", config.generation_shard_size, config.exclude_seed_digests
    )
    if not seed_paths and config.exclude_seed_digests:
        # Every seed was generated by an earlier version: no teacher call, nothing to publish.
        logger.info("no new seeds: %d were generated earlier", seed_stats["dropped"].get(SeedExcluder.REASON, 0))
        return {"status": "no_new_seeds", "config": config.model_dump(mode="json"), "stages": {"seeds": seed_stats},
                "rows": 0}
    summaries = await _generate_all(config, seed_paths, work, seed_stats["out"])
    teacher_stats = _merge_stage("teacher", [s["teacher"] for s in summaries])
    parse_stats = _merge_stage("parse", [s["parse"] for s in summaries])

    clean_files, audits, clean_stats = _clean(config, summaries, work)
    rows = sum(pq.read_metadata(f).num_rows for f in clean_files)
    stages = {
        "seeds": seed_stats,
        "teacher": teacher_stats.as_dict(),
        "parse": parse_stats.as_dict(),
        **clean_stats,
    }
    dropped_after_seeding = sum(
        sum(stage["dropped"].values()) for name, stage in stages.items() if name != "seeds"
    )
    budget_stopped = any(s["teacher"].get("extra", {}).get("budget_stopped") for s in summaries)
    manifest = {
        "status": "stopped_by_budget" if budget_stopped else "complete",
        "prefect_flow_run_id": str(prefect_flow_run.id) if prefect_flow_run.id else None,
        "config": config.model_dump(mode="json"),
        "config_fingerprint": config_fingerprint(config),
        "stages": stages,
        "accounting": {
            "seeds": seed_stats["out"],
            "rows": rows,
            "dropped": dropped_after_seeding,
            "balanced": seed_stats["out"] == rows + dropped_after_seeding,
        },
        # What the dataset's replies cost, whether paid in this run or in the run that cached them.
        "usage": {
            "prompt_tokens": _sum_extra(summaries, "tokens_in") + _sum_extra(summaries, "cached_tokens_in"),
            "completion_tokens": _sum_extra(summaries, "tokens_out") + _sum_extra(summaries, "cached_tokens_out"),
            "requests_sent": _sum_extra(summaries, "requests"),
            "retries": _sum_extra(summaries, "retries_total"),
            "cache_hits": _sum_extra(summaries, "cache_hits"),
            "cost_usd": round(_sum_extra(summaries, "cost_usd") + _sum_extra(summaries, "cached_cost_usd"), 6),
            "price_per_mtok": list(config.teacher.prices()),
            "token_encoding": next(
                (s["teacher"]["extra"].get("encoding") for s in summaries if s["teacher"].get("extra")), None
            ),
        },
        "seconds": {name: stage.get("seconds", 0.0) for name, stage in stages.items()},
    }
    manifest["seconds"]["total"] = round(time.perf_counter() - started, 3)
    manifest = publish_dataset(
        out, (pq.read_table(f) for f in clean_files), config.shard_size, manifest, audits, schema=DATASET_SCHEMA
    )
    write_text_atomic(render_dataset_card(manifest), out / "README.md")

    await acreate_table_artifact(_shard_table_rows(summaries), key=SHARDS_KEY, description="Per-shard generation figures")
    await acreate_markdown_artifact(_summary_markdown(manifest), key=SUMMARY_KEY, description="Refresh summary")
    if "decontaminate" in manifest["stages"]:
        await acreate_markdown_artifact(
            decontamination_report_markdown(manifest["stages"]["decontaminate"]),
            key=DECONTAMINATION_KEY, description="Benchmark decontamination: hits per benchmark and matcher",
        )
    if config.report:
        from tasks.publish.report import render_report

        await acreate_markdown_artifact(
            render_report(out, manifest), key=REPORT_KEY, description="Dataset report: card, samples, charts"
        )
    logger.info("wrote %d rows to %s (%s)", manifest["rows"], out, manifest["status"])
    if not manifest["accounting"]["balanced"]:
        raise RuntimeError(f"seed accounting does not balance: {manifest['accounting']}")
    return manifest


def _clean(config: RefreshConfig, summaries: list[dict], work: Path) -> tuple[list[Path], dict, dict]:
    """Exact dedup across shards, then near-dedup, then decontamination, streaming shard by shard.

    Memory holds exact-dedup digests and near-dedup signatures, never all rows: rows are
    staged under work/deduped/ after exact dedup and under work/clean/ at the end.
    Returns (clean files in order, audits by stage, stats by stage).
    """
    deduped_dir, clean_dir = work / "deduped", work / "clean"
    for stale in [*deduped_dir.glob("*.parquet"), *clean_dir.glob("*.parquet")]:
        stale.unlink()
    deduper = ExactDeduper()
    exact_audit, failures = [], []
    with timed(deduper.stats):
        for s in summaries:  # shard order = seed order, so "first occurrence" is deterministic
            table, audit = deduper.filter(pq.read_table(s["pairs_path"]))
            write_parquet_atomic(table, deduped_dir / f"{s['shard']}.parquet")
            exact_audit.extend(audit)
            failures.append(pq.read_table(s["failures_path"]))
    stats = {"exact_dedup": deduper.stats.as_dict()}
    audits = {
        "generation": pa.concat_tables(failures) if failures else AUDIT_SCHEMA.empty_table(),
        "exact_dedup": pa.Table.from_pylist(exact_audit, schema=AUDIT_SCHEMA),
    }
    if deduper.stats.rows_out == 0:
        return [], audits, stats

    source = FileSource(deduped_dir, ("problem", "solution"))
    plan = plan_near_dedup(source, config.near_dedup) if config.near_dedup is not None else None
    decontaminator = Decontaminator(config.decontamination) if config.decontamination is not None else None
    near_audits, decon_audits, clean_files = [], [], []

    def near_deduped() -> Iterator[pa.Table]:
        offset = 0
        for chunk in source.chunks():
            if plan is not None:
                kept, audit = plan.apply(chunk, offset)
                near_audits.append(audit)
            else:  # without near-dedup every row is its own cluster
                kept = chunk.append_column(CLUSTER_ID, chunk["id"]).append_column(
                    CLUSTER_SIZE, pa.array(np.ones(chunk.num_rows, np.int32))
                )
            offset += chunk.num_rows
            yield kept

    with decontaminator or contextlib.nullcontext():
        for i, table in enumerate(rebatch(near_deduped(), MATCH_CHUNK_ROWS)):
            if decontaminator is not None:
                keep, audit = decontaminator.flag(table)
                decon_audits.append(audit)
                table = table.filter(pa.array(keep, type=pa.bool_()))
            clean_files.append(write_parquet_atomic(table, clean_dir / f"part-{i:05d}.parquet"))
        if decontaminator is not None:
            stats["decontaminate"] = decontaminator.stats().as_dict()
            audits["decontaminate"] = pa.concat_tables(decon_audits) if decon_audits else AUDIT_SCHEMA.empty_table()
    if plan is not None:
        stats["near_dedup"] = plan.stats.as_dict()
        audits["near_dedup"] = pa.concat_tables(near_audits) if near_audits else AUDIT_SCHEMA.empty_table()
    # Stages in pipeline order, whatever order they finished in.
    order = ["exact_dedup", "near_dedup", "decontaminate"]
    return clean_files, audits, {name: stats[name] for name in order if name in stats}


def _summary_markdown(manifest: dict) -> str:
    lines = [
        f"# OSS-Instruct refresh: {manifest['rows']} rows ({manifest['status']})",
        "",
        f"Config fingerprint `{manifest['config_fingerprint']}`; output `{manifest['config']['output_dir']}`.",
        "",
        "| stage | in | out | dropped | seconds |",
        "| --- | ---: | ---: | --- | ---: |",
    ]
    for name, stage in manifest["stages"].items():
        dropped = ", ".join(f"{k}: {v}" for k, v in stage["dropped"].items()) or "-"
        lines.append(f"| {name} | {stage['in']} | {stage['out']} | {dropped} | {stage['seconds']} |")
    usage = manifest["usage"]
    lines += [
        "",
        f"Tokens: {usage['prompt_tokens']} in, {usage['completion_tokens']} out; "
        f"requests sent {usage['requests_sent']}, cache hits {usage['cache_hits']}; cost ${usage['cost_usd']}.",
        "",
        f"Accounting: {manifest['accounting']}",
    ]
    return "\n".join(lines)
