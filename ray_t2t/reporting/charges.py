"""What each group is charged besides its own training: the training of the teacher it learns from
(and the teacher inference that stored its soft targets), and the training of the model it starts
from (a pretraining run, for a fine-tune). A method's traits (Method.teacher_use, all_teachers) decide
which; averaged over the charged runs, so a sweep that trained several teachers charges their mean."""

from __future__ import annotations

from dataclasses import dataclass, field

from ray_t2t.reporting.records import Group, is_teacher_run, method_of, teacher_use


@dataclass
class Charge:
    """What one run of a group is charged on top of its own training, one-off (storage: per month):
    a distillation student its teacher; a run that starts from another run's model that run."""

    train_s: float = 0.0
    device_s: float = 0.0
    cost: float | None = 0.0  # teacher training + teacher inference + base training
    training_cost: float | None = 0.0
    inference_cost: float | None = 0.0
    storage_month: float = 0.0
    parts: list[str] = field(default_factory=list)
    base_runs: list[str] = field(default_factory=list)  # labels of the runs charged as base training

    def add_cost(self, attribute: str | None, value: float | None) -> None:
        """Add `value` to `attribute` (a part of the cost; None: no part of its own) and to the total."""
        for name in ("cost",) if attribute is None else (attribute, "cost"):
            current = getattr(self, name)
            setattr(self, name, None if current is None or value is None else current + value)

    def extra(self, key: str) -> float | None:
        """The charge in the units of a curve key (wall_s, device_s, cost)."""
        return {"wall_s": self.train_s, "device_s": self.device_s, "cost": self.cost}[key]


def teacher_charge(group: Group, runs: list[dict], inferences: list[dict]) -> Charge:
    """The teacher's training (and, for students reading stored soft targets, its inference) charged
    to one student of `group`; zero for groups that are not distillation.

    The teacher trained here is the run(s) with params.model == "teacher" (the mean over them, when a
    sweep trained several). A teacher from elsewhere is charged what its soft-target record carries
    (zero when pre-existing). A method with all_teachers (kd_multi_teacher) uses every teacher; the others
    the first, which is the one trained here when there is one."""
    charge = Charge()
    if not group.is_distillation:
        return charge
    method = method_of(group.records[0])
    all_teachers = bool(method and method.all_teachers)
    teacher_runs = [r for r in runs if is_teacher_run(r)]
    teacher_labels = {r["label"] for r in teacher_runs}
    label_of = lambda record: (record.get("teacher") or {}).get("label")
    if all_teachers:
        used = list(inferences)
    else:
        used = [i for i in inferences if label_of(i) in teacher_labels] or list(inferences)
        if len(used) > 1:
            charge.parts.append(f"{len(used)} teachers charged (the records do not say which teacher is first)")
    if teacher_runs and (not all_teachers or any(label_of(i) in teacher_labels for i in used)):
        n = len(teacher_runs)
        charge.train_s += sum(r["times"]["train_s"] for r in teacher_runs) / n
        charge.device_s += sum(r["device_seconds"] for r in teacher_runs) / n
        costs = [r["cost"]["total"] for r in teacher_runs]
        charge.add_cost("training_cost", None if None in costs else sum(costs) / n)
        charge.parts.append(
            f"teacher training (run {', '.join(sorted(teacher_labels))}"
            + (f", mean of {n} runs" if n > 1 else "")
            + ")"
        )
        from_records = [] if not all_teachers else [i for i in used if label_of(i) not in teacher_labels]
    else:
        from_records = used
    for record in from_records:  # teachers not trained here: what their soft-target record carries
        teacher = record.get("teacher") or {}
        if teacher.get("pre_existing", True):
            charge.parts.append(f"pre-existing teacher {teacher.get('label')} (training not charged)")
        else:
            charge.device_s += teacher.get("training_device_seconds") or 0.0
            charge.add_cost("training_cost", teacher.get("training_cost"))
            charge.parts.append(f"training of teacher {teacher.get('label')} (from its soft-target record)")
    if not teacher_runs and not used:
        charge.parts.append("pre-existing teacher without a record (training not charged)")
    if group.reads_soft_targets:
        for record in used:
            times = record.get("times") or {}
            charge.train_s += times.get("wall_s") or times.get("busy_s") or 0.0
            charge.device_s += record.get("device_seconds") or 0.0
            charge.add_cost("inference_cost", (record.get("cost") or {}).get("total"))
            charge.storage_month += (record.get("cost") or {}).get("storage_per_month") or 0.0
            charge.parts.append(f"soft targets of {label_of(record)}")
        if not used:
            charge.parts.append("no soft-target record found (inference not charged)")
    elif teacher_use(group.records[0]) == "live":
        charge.parts.append("live teacher: its forward passes are in the student's own time")
    return charge


def base_charge(group: Group, runs: list[dict], charge: Charge) -> None:
    """Add to `charge` the training of the runs of this experiment whose exported model the group's
    runs started from (model.initialized_from = that run's model.export_path: a pretrain run, for a
    fine-tune), averaged over the group's runs; not a teacher run already charged to distillation.
    Records without initialized_from (written before it existed) are charged nothing."""
    exports = {(r.get("model") or {}).get("export_path"): r for r in runs}
    n = len(group.records)
    charged: dict[str, int] = {}
    for record in group.records:
        base = exports.get((record.get("model") or {}).get("initialized_from"))
        if base is None or base is record or (group.is_distillation and is_teacher_run(base)):
            continue
        charge.train_s += base["times"]["train_s"] / n
        charge.device_s += base["device_seconds"] / n
        cost = (base.get("cost") or {}).get("total")
        charge.add_cost(None, None if cost is None else cost / n)  # base_runs say which runs
        charged[base["label"]] = charged.get(base["label"], 0) + 1
    for label, count in charged.items():
        charge.base_runs.append(label)
        charge.parts.append(
            f"training of the model it starts from (run {label}" + (f", {count} of {n} runs" if count < n else "") + ")"
        )
