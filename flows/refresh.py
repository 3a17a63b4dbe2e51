"""The OSS-Instruct refresh flow: seeds -> teacher -> pairs -> dedup -> decontamination -> shards.

Orchestration only: each stage is a task run (tasks/<stage>/step.py) with its own state,
time and counts in the UI; the work lives in the stage packages.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.runtime import flow_run as prefect_flow_run
from pydantic import Field

from tasks.core.config import FingerprintedConfig, operational
from tasks.decontamination.decontaminate import DecontaminationConfig
from tasks.decontamination.step import decontaminate_task
from tasks.dedup.near import NearDedupConfig
from tasks.dedup.step import (
    ShardDedup, exact_dedup_task, near_dedup_clusters_task, near_dedup_signatures_task, persist_published_signatures_task,
)
from tasks.generation.shard import merge_summaries
from tasks.generation.shard_job import GlobalRateLimit
from tasks.generation.shard_prep import PrepSettings
from tasks.generation.stage_progress import ShardProgress
from tasks.generation.step import generate_all, known_in_workers
from tasks.publish.manifest import no_new_seeds_manifest, refresh_manifest
from tasks.publish.artifacts import create_refresh_artifacts
from tasks.publish.step import publish_task, report_task
from tasks.seeds.exclusion import SeedExcluder
from tasks.seeds.sampling import SeedConfig
from tasks.seeds.step import sample_seeds_task
from tasks.teacher.prompts import WITH_TESTS
from tasks.teacher.session import TeacherConfig
from tasks.teacher.step import forecast_task
from tasks.sandbox.isolation import require_isolation
from tasks.validation.step import shard_validation
from tasks.validation.validate import ValidationConfig


class RefreshConfig(FingerprintedConfig):
    """Everything a refresh needs. The CLI, prefect.yaml and the UI form all fill this one model."""

    output_dir: str = operational("out/oss-instruct")
    seeds: SeedConfig = Field(default_factory=lambda: SeedConfig(num_seeds=100))
    teacher: TeacherConfig
    shard_size: int = Field(1000, ge=1, description="at most this many rows per Parquet shard")
    generation_shard_size: int = Field(500, ge=1, description="seeds per generation task run")
    parallel_shards: int | None = operational(
        None, ge=1, description="generation shards in flight at once (default: enough to fill teacher.concurrency)"
    )
    validation: ValidationConfig | None = Field(
        default_factory=ValidationConfig,
        description="run each solution against its tests in the sandbox (when the teacher's output format asks for "
        "tests); None turns it off",
    )
    near_dedup: NearDedupConfig | None = Field(default_factory=NearDedupConfig, description="None turns it off")
    decontamination: DecontaminationConfig | None = Field(
        default_factory=DecontaminationConfig, description="None turns it off"
    )
    cache_dir: str | None = operational(
        None, description="teacher reply cache directory (default OUTPUT/.cache); versions of one dataset share one"
    )
    exclude_seed_digests: list[str] = Field(
        default_factory=list,
        description="seed digest files (earlier versions' seed_digests.parquet): those seeds are not sent again",
    )
    shard_deployment: str | None = operational(
        None,
        description="run each generation shard as a flow run of this deployment (e.g. 'generate-shard/cpu'), "
        "spread over the pool's workers; None runs shards in this process",
    )
    teacher_rate_limit: GlobalRateLimit | None = operational(
        None, description="a Prefect global rate limit shared by every process sending to the teacher"
    )
    report: bool = operational(True, description="publish the markdown report artifact (dataset card, samples, charts)")
    cleaning_workers: int | None = operational(
        None, ge=1, description="processes cleaning each landed shard (default: leave a core to the teacher client)"
    )
    dry_run: bool = operational(
        False, description="forecast requests, tokens, cost and wall time (OUTPUT/forecast.json); send nothing"
    )

    def validates(self) -> bool:
        """Validation runs when it is on and the teacher is asked for tests to run."""
        return self.validation is not None and self.teacher.output_format in WITH_TESTS

    def prep_settings(self) -> PrepSettings:
        """The cleaning done per shard as it lands (per-row work of the stages that are on)."""
        return PrepSettings(validation=self.validation if self.validates() else None,
                            near_dedup=self.near_dedup, decontamination=self.decontamination)

    def parallel(self) -> int:
        """Generation shards in flight: by default enough to keep teacher.concurrency busy."""
        if self.teacher.teacher_mode == "batch":  # a shard waits hours on its batches: let them all run at once
            return self.parallel_shards or max(2, -(-self.seeds.num_seeds // self.generation_shard_size))
        return self.parallel_shards or max(2, -(-self.teacher.concurrency // self.generation_shard_size) + 1)

    def request_cache_path(self) -> Path:
        return Path(self.cache_dir or Path(self.output_dir) / ".cache") / "requests.sqlite"

    def budget_ledger_path(self, run_id: str) -> Path:
        """The run's spend ledger, beside the reply cache: every process of the run shares it."""
        return self.request_cache_path().parent / "budget" / f"{run_id}.sqlite"


def config_fingerprint(config: RefreshConfig) -> str:
    return config.content_fingerprint()


@flow(name="oss-instruct-refresh", log_prints=True)
async def refresh_flow(config: RefreshConfig) -> dict:
    """Build (or rebuild) an OSS-Instruct dataset in config.output_dir; returns the manifest."""
    if config.dry_run:  # the cost forecast: every request built and counted, none sent
        return await forecast_task(config.seeds, config.teacher, config.generation_shard_size,
                                   config.exclude_seed_digests, config.request_cache_path(), Path(config.output_dir))
    started = time.perf_counter()
    out = Path(config.output_dir)
    work = out / ".work"

    if config.validates():
        require_isolation(config.validation.accept_weak_sandbox)  # refuse before any request, not in a worker
    elif config.validation is not None:  # the paper's formats bring no tests: nothing run, nothing "verified"
        get_run_logger().warning("validation skipped: output format %r asks the teacher for no tests "
                                 "(use sections_tests or json_tests)", config.teacher.output_format)

    # Seeds stream into generation; each shard is validated and cleaned per row in a worker as it lands.
    seed_files: asyncio.Queue = asyncio.Queue()
    sampling = asyncio.ensure_future(sample_seeds_task(
        config.seeds, work / "seeds", config.generation_shard_size, config.exclude_seed_digests, seed_files
    ))
    deduped = ShardDedup(work / "deduped")
    dedup_progress = await ShardProgress("exact_dedup", -(-config.seeds.num_seeds // config.generation_shard_size)).start()
    summaries = []
    try:
        async for shard in generate_all(
            seed_files, config.teacher, work, config.request_cache_path(), config.parallel(), config.prep_settings(),
            rate_limit=config.teacher_rate_limit, shard_deployment=config.shard_deployment,
            expected_replies=config.seeds.num_seeds, prep_workers=config.cleaning_workers,
            ledger_path=config.budget_ledger_path(str(prefect_flow_run.id or uuid.uuid4().hex)),
            seeds_per_shard=config.generation_shard_size,
        ):
            summaries.append(shard)
            await exact_dedup_task(shard, deduped)  # in seed order, while later shards generate
            dedup_progress.expect_at_least(len(summaries))
            await dedup_progress.advance()
    except BaseException:
        sampling.cancel()  # stops the sampling process too
        raise
    seed_stats = await sampling
    await dedup_progress.finish()
    if not summaries and config.exclude_seed_digests:
        get_run_logger().info("no new seeds: %d were generated earlier", seed_stats["dropped"].get(SeedExcluder.REASON, 0))
        return no_new_seeds_manifest(config.model_dump(mode="json"), seed_stats)

    teacher_stats, parse_stats, failures = merge_summaries(summaries)
    ahead = known_in_workers(summaries)  # what the shard workers' index and LSH settings are
    rows = deduped.staged()
    any_pairs = rows.rows > 0
    stages = {"seeds": seed_stats, "teacher": teacher_stats.as_dict(), "parse": parse_stats.as_dict()}
    audits = {"generation": failures}
    if config.validates():
        stages["validate"], audits["validate"] = shard_validation(summaries)
    stages["exact_dedup"], audits["exact_dedup"] = rows.stats.as_dict(), rows.audit

    if any_pairs and config.near_dedup is not None:
        signatures = near_dedup_signatures_task(rows, config.near_dedup, ahead.get("near_dedup_lsh"))
        # The index learns only published rows: decontamination may still drop some of these.
        rows = near_dedup_clusters_task(rows, signatures, config.near_dedup, work / "near_deduped", persist=False)
        stages["near_dedup"], audits["near_dedup"] = rows.stats.as_dict(), rows.audit
    if any_pairs and config.decontamination is not None:
        rows = decontaminate_task(rows, config.decontamination, work / "clean", ahead.get("decontamination_index"))
        stages["decontaminate"], audits["decontaminate"] = rows.stats.as_dict(), rows.audit

    manifest = refresh_manifest(
        config.model_dump(mode="json"), config.content_fingerprint(), stages, summaries, rows.rows,
        config.teacher.prices(), str(prefect_flow_run.id) if prefect_flow_run.id else None,
        time.perf_counter() - started,
    )
    manifest = publish_task(out, rows.files if rows.rows else [], config.shard_size, manifest, audits,
                            near_deduped=config.near_dedup is not None)
    if any_pairs and config.near_dedup is not None and config.near_dedup.index_dir:
        persist_published_signatures_task(signatures, [str(out / f["path"]) for f in manifest["files"]], config.near_dedup)
    await create_refresh_artifacts(report_task(manifest, summaries, out, config.report))
    if not manifest["accounting"]["balanced"]:
        raise RuntimeError(f"seed accounting does not balance: {manifest['accounting']}")
    return manifest
