"""The one place that names every column ossforge writes.

Seeds, dataset rows, drop audits and near-dup signatures all have their Arrow schema here,
so readers and writers in every step agree, and a column is renamed in one place.
"""

from __future__ import annotations

import pyarrow as pa

# --- seeds: one snippet of real code, with where it came from -------------------------
SEED_SCHEMA = pa.schema(
    [
        pa.field("seed_index", pa.int64(), nullable=False),  # position in sampling order
        pa.field("seed", pa.string(), nullable=False),  # the snippet text
        pa.field("lang", pa.string(), nullable=False),
        pa.field("seed_source", pa.string()),  # corpus: directory, file, or hub dataset id
        pa.field("seed_path", pa.string()),  # file path (or path column) inside the source
        pa.field("seed_repo", pa.string()),
        pa.field("seed_license", pa.string()),
        pa.field("seed_start_line", pa.int32()),  # 1-based, inclusive
        pa.field("seed_end_line", pa.int32()),  # 1-based, inclusive
    ]
)
SEED_COLUMNS = SEED_SCHEMA.names

# --- teacher sampling parameters, kept on every row ------------------------------------
SAMPLING_COLUMNS = ["teacher_model", "temperature", "top_p", "request_seed", "max_tokens", "output_format"]

# --- dataset rows: what the shards under OUTPUT/data/ hold ----------------------------
DATASET_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),  # stable: hash of the teacher request
        *SEED_SCHEMA,
        pa.field("problem", pa.string(), nullable=False),
        pa.field("solution", pa.string(), nullable=False),
        pa.field("teacher_model", pa.string(), nullable=False),
        pa.field("temperature", pa.float64()),
        pa.field("top_p", pa.float64()),
        pa.field("request_seed", pa.int64()),
        pa.field("max_tokens", pa.int32()),
        pa.field("output_format", pa.string()),
        pa.field("finish_reason", pa.string()),
        pa.field("prompt_tokens", pa.int32()),
        pa.field("completion_tokens", pa.int32()),
        pa.field("system_fingerprint", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC")),
        # filled by near-dedup: the cluster a kept row represents, and its size (1 = unique)
        pa.field("cluster_id", pa.string()),
        pa.field("cluster_size", pa.int32()),
    ]
)
DATASET_COLUMNS = DATASET_SCHEMA.names

# Columns a step may add to an arbitrary input dataset (standalone dedup / decontaminate).
CLUSTER_ID = "cluster_id"
CLUSTER_SIZE = "cluster_size"

# --- audits: rows removed by a step, with why ----------------------------------------
# Audit files hold the removed row's id and text columns plus these.
AUDIT_COLUMNS = ["id", "stage", "reason", "duplicate_of", "benchmark", "benchmark_item", "matcher", "matched_span",
                 "detail"]
AUDIT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("stage", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("duplicate_of", pa.string()),  # near/exact dedup: the kept row's id
        pa.field("benchmark", pa.string()),  # decontamination: which benchmark
        pa.field("benchmark_item", pa.string()),  # decontamination: the item's id
        pa.field("matcher", pa.string()),  # decontamination: substring / ngram / minhash
        pa.field("matched_span", pa.string()),
        pa.field("problem", pa.string()),
        pa.field("solution", pa.string()),
        pa.field("detail", pa.string()),  # validation: the failure's message and a stderr excerpt
    ]
)


def empty_table(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()


# --- evaluation: one row per benchmark problem scored (ossforge evaluate) ---------------
EVAL_RESULT_SCHEMA = pa.schema(
    [
        pa.field("benchmark", pa.string(), nullable=False),  # humaneval / humaneval+ / mbpp+
        pa.field("task_id", pa.string(), nullable=False),
        pa.field("passed_base", pa.bool_(), nullable=False),  # humaneval: its own tests; EvalPlus: base inputs
        pa.field("passed_plus", pa.bool_()),  # EvalPlus: base and plus inputs; null for humaneval
        pa.field("error", pa.string()),  # first failure's kind (timeout, wrong_answer, ...); null = passed
        pa.field("error_detail", pa.string()),
        pa.field("completion", pa.string()),  # the model's raw reply after the response prefix
        pa.field("program", pa.string()),  # the code that was executed
        pa.field("seconds", pa.float64()),  # sandbox wall time for this problem
    ]
)
