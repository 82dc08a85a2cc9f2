"""Report sections for few-shot runs (quality against k) and multi-task runs (each task against
single-task runs of it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ray_t2t.reporting.records import (
    Target,
    group_records,
    is_teacher_run,
    method_of,
    time_to_target,
)
from ray_t2t.reporting.stats import Stat


def fewshot_by_k(
    runs: list[dict], metric: str, currency: str, level: float, target: Target | None = None
) -> list[dict]:
    """Final quality against k: one row per fewshot entry (label), mode and k, over its runs (seeds),
    sorted by label, mode and k. Empty unless the fewshot runs have two or more distinct k."""

    def k_of(record: dict) -> Any:
        method = method_of(record)
        return (record.get("params") or {}).get(method.examples_param) if method and method.examples_param else None

    shots = [r for r in runs if isinstance(k_of(r), int)]
    if len({k_of(r) for r in shots}) < 2:
        return []
    cells: dict[tuple, list[dict]] = {}
    for r in shots:
        cells.setdefault((r["label"], r["params"].get("mode", "train"), k_of(r)), []).append(r)
    rows = []
    for (label, mode, k), records in sorted(cells.items()):
        reached = sum(
            1 for r in records if target and time_to_target(r["learning_curve"], target.metric, target.op, target.value)
        )
        rows.append(
            {
                "label": label,
                "mode": mode,
                "k": k,
                "runs": len(records),
                "train_examples": Stat.of([r["data"].get("train_examples") for r in records], level),
                "test": Stat.of([r["final"]["test"].get(metric) for r in records], level),
                "device_h": Stat.of([r["device_seconds"] / 3600 for r in records], level),
                "cost": Stat.of([r["cost"]["total"] for r in records], level),
                "reached": reached if target else None,
            }
        )
    return rows


def _task_names(record: dict) -> dict[str, str]:
    """A multitask record's {task name: task id} (g2p: g2p_cmudict); {} for other records."""
    info = record.get("multitask")
    tasks = info.get("tasks") if isinstance(info, dict) else None
    return {name: t.get("task") for name, t in tasks.items()} if isinstance(tasks, dict) else {}


def _single_task_key(record: dict, task_id: str, metric: str) -> str | None:
    """Where a single-task run of `task_id` keeps `metric` in its curve: `metric` for a run whose
    data.task is the task, `<metric>_<name>` for a multitask entry of that one task; None otherwise."""
    names = _task_names(record)
    if len(names) == 1 and list(names.values()) == [task_id]:
        return f"{metric}_{next(iter(names))}"
    if not names and (record.get("data") or {}).get("task") == task_id:
        return metric
    return None


def _to_target_stats(records: list[dict], metric_key: Callable[[dict], str], target: dict, level: float) -> dict:
    """Time and money to `target` (read at val_<metric_key(record)>) over the records that reached it."""
    hits = [time_to_target(r["learning_curve"], metric_key(r), target["op"], target["value"]) for r in records]
    reached = [h for h in hits if h is not None]
    return {
        "reached": len(reached),
        "runs": len(records),
        "hits": hits,
        "s": Stat.of([h["wall_s"] for h in reached], level),
        "cost": Stat.of([h["cost"] for h in reached], level),
    }


def multitask_comparison(runs: list[dict], metric: str, level: float, target: Target | None = None) -> list[dict]:
    """Per multitask group and task: time and money to the task's target, against the single-task runs
    of that task. Single-task runs are this folder's finished runs whose record's data.task is the
    task's (teacher runs aside), and multitask entries of that one task (same data preparation,
    prefix and tokenizer settings: the closest baseline); they are measured against the multitask
    entry's target for the task, so both sides meet the same bar. Per group, the "all tasks" row: the
    multitask run reaching every task's target (its slowest task) against the fastest single-task group of each task
    run one after another (their sum). `target` (the report's --target) replaces every task's own."""
    multi = [r for r in runs if len(_task_names(r)) > 1]
    singles = [r for r in runs if len(_task_names(r)) <= 1 and not is_teacher_run(r)]
    rows = []
    for group in group_records(multi):
        tasks = group.records[0]["multitask"].get("tasks") or {}
        per_run_all = [0.0] * len(group.records)  # wall s until every task reached, per run (None: not all)
        per_run_cost = [0.0] * len(group.records)
        single_sum = {"s": 0.0, "cost": 0.0}
        for name, info in tasks.items():
            task_target = info.get("target")
            if target is not None:
                task_target = {"metric": target.metric, "op": target.op, "value": target.value}
            row = {
                "group": group.name,
                "task": name,
                "task_id": info.get("task"),
                "probability": info.get("probability"),
                "target": None,
                "multitask_test": Stat.of([r["final"]["test"].get(f"{metric}_{name}") for r in group.records], level),
                "single_groups": [],
                "best_single": None,
            }
            if task_target is None:
                per_run_all = [None] * len(group.records)
                single_sum = None
                rows.append(row)
                continue
            row["target"] = f"{task_target['metric']} {task_target['op']} {task_target['value']:.4g}"
            row["multitask"] = _to_target_stats(
                group.records, lambda r, key=f"{task_target['metric']}_{name}": key, task_target, level
            )
            for i, hit in enumerate(row["multitask"]["hits"]):
                if hit is None or per_run_all[i] is None:
                    per_run_all[i] = per_run_cost[i] = None
                else:
                    per_run_all[i] = max(per_run_all[i], hit["wall_s"])
                    per_run_cost[i] = max(per_run_cost[i], hit["cost"] or 0.0)
            task_id, task_metric = info.get("task"), task_target["metric"]
            key = lambda r, task=task_id, name=task_metric: _single_task_key(r, task, name)
            for single in group_records([r for r in singles if key(r) is not None]):
                stats = _to_target_stats(single.records, key, task_target, level)
                stats |= {
                    "group": single.name,
                    "method": single.method,
                    "test": Stat.of(
                        [r["final"]["test"].get(_single_task_key(r, info.get("task"), metric)) for r in single.records],
                        level,
                    ),
                }
                row["single_groups"].append(stats)
            reaching = [g for g in row["single_groups"] if g["reached"] == g["runs"] and g["s"].mean is not None]
            row["best_single"] = min(reaching, key=lambda g: g["s"].mean) if reaching else None
            if single_sum is not None and row["best_single"] is not None:
                single_sum["s"] += row["best_single"]["s"].mean
                single_sum["cost"] += row["best_single"]["cost"].mean or 0.0
            else:
                single_sum = None
            rows.append(row)
        done = [(s, c) for s, c in zip(per_run_all, per_run_cost) if s is not None]
        rows.append(
            {
                "group": group.name,
                "task": "all tasks",
                "all": True,
                "reached": len(done),
                "runs": len(group.records),
                "s": Stat.of([s for s, _ in done], level),
                "cost": Stat.of([c for _, c in done], level),
                "single_sum": single_sum,
            }
        )
    return rows


def _multitask_json(rows: list[dict]) -> list[dict]:
    def plain(value: Any) -> Any:
        if isinstance(value, Stat):
            return value.as_dict()
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items() if k != "hits"}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return [plain(row) for row in rows]
