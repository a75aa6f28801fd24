"""Score data: the :class:`ScoreSet` type, file readers, task registry and task balancing."""

from routerdc.data.balance import balance
from routerdc.data.formats import MISSING, load_many, load_score_set, load_scores, read_queries, to_records, write_jsonl
from routerdc.data.registry import (
    DATA_ENV, PAPER_ID_TASKS, PAPER_OOD_TASKS, TASKS, TaskInfo, canonical_task, paper_files,
    resolve_data_dir, resolve_file, task_label, task_metric,
)
from routerdc.data.scoreset import METRICS, DataError, ScoreSet, check_same_llms, query_key

__all__ = [
    "DATA_ENV", "METRICS", "PAPER_ID_TASKS", "PAPER_OOD_TASKS", "TASKS", "DataError", "ScoreSet",
    "TaskInfo", "balance", "canonical_task", "check_same_llms", "load_many", "load_score_set",
    "load_scores", "paper_files", "read_queries", "resolve_data_dir", "resolve_file",
    "task_label", "task_metric", "MISSING", "query_key", "to_records", "write_jsonl",
]
