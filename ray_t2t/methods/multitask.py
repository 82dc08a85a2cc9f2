"""multitask: one randomly initialized model trained on several tasks at once, T5-style.

    ray-t2t train configs/multitask_smoke.yaml method=multitask

    methods:
      - name: multitask
        tasks: [g2p_cmudict, p2g_cmudict, {task: num2words, split_sizes: {train: 5000}}]
        mixing: temperature          # proportional | temperature (p_i ∝ n_i^(1/T)) | fixed (each task's weight)
        temperature: 2

Data: prepare() (on the driver) builds one prepared dataset for the entry (ray_t2t.data.prepare_multitask):
each task loaded and split as its own data section would be (the experiment's `data` with the task's
options), every source behind the task's prefix ("g2p: "), the splits pooled with a `task` column and
one tokenizer built over all tasks (data.tokenizer; char levels where a task needs them). Its path
reaches the workers in the extras, and the loop trains and evaluates on it.

Training order: batch_order() returns a MixtureOrder: examples drawn by the mixture over the tasks'
training sizes (or weights), seeded and resumable like every batch order.

Evaluation: the loop scores each validation/test example and, since the split has a `task` column,
also per task: val_wer_g2p, val_loss_p2g, ... next to the pooled figures; each task's time to its
target (the task's `target`, else eval.target) lands in the record's time_to_target_by_task. The
record's `multitask` holds the tasks, their prefixes, sizes and mixture probabilities.
"""

from __future__ import annotations

from ray_t2t.methods import Setup


def check(cfg, params) -> None:
    """ConfigError naming the key for a task its section cannot describe, or a shared tokenizer that
    cannot spell a task's text (data.tokenizer word level for spellings or numbers)."""
    from ray_t2t.data import multitask_task_data

    multitask_task_data(cfg, params)


def probabilities(params, summary: dict) -> dict[str, float]:
    """The mixture over the tasks of a prepared multitask dataset (its summary's training sizes)."""
    from ray_t2t.batching.order import mixture_probabilities

    sizes = {task.name: summary["tasks"][task.name]["examples"]["train"] for task in params.tasks}
    weights = {task.name: task.weight for task in params.tasks}
    return mixture_probabilities(sizes, params.mixing, params.temperature, weights)


def prepare(cfg, params, log) -> dict:
    """Build (or reuse) the pooled dataset; the workers get its path, each task's target and what the
    run record says about the tasks."""
    from ray_t2t.data import prepare_multitask

    check(cfg, params)
    data = prepare_multitask(cfg, params, log=log)
    mixture = probabilities(params, data.summary)
    default = cfg.eval.target.model_dump() if cfg.eval.target else None
    targets = {task.name: task.target.model_dump() if task.target else default for task in params.tasks}
    tasks = {task.name: {"task": task.task, "prefix": task.prefix, "probability": mixture[task.name],
                         "examples": data.summary["tasks"][task.name]["examples"], "target": targets[task.name]}
             for task in params.tasks}
    shown = ", ".join(f"{name} {p:.3f}" for name, p in mixture.items())
    log(f"multitask data: {data.path} ({'reused' if data.reused else 'built'}); {params.mixing} mixture: {shown}")
    return {"data_path": str(data.path.resolve()), "task_targets": targets,
            "record_fields": {"multitask": {"mixing": params.mixing, "temperature": params.temperature,
                                            "tasks": tasks}}}


def build(setup: Setup):
    from ray_t2t.methods.scratch import build as build_scratch

    return build_scratch(setup)


def batch_order(setup: Setup, data, lengths, batch_size, world_size, rank, seed, group_by_length):
    """Training batches drawn by the task mixture (ray_t2t.batching.order.MixtureOrder)."""
    from ray_t2t.batching.order import MixtureOrder

    tasks = data.read_split("train").column("task").to_pylist()
    return MixtureOrder(tasks, probabilities(setup.params, data.summary), lengths, batch_size, world_size, rank,
                        seed, group_by_length)
