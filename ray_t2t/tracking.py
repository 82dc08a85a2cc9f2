"""Experiment tracking (docs/tracking.md): TensorBoard, MLflow and Weights & Biases, each optional.

    tracker = Tracker.start(cfg.tracking, "quickstart", "kd_logits-seed1", run_dir, params)
    tracker.log({"val_wer": 0.81, "train_loss": 1.2}, step=100)     # every evaluation (the curve)
    tracker.finish({"test_wer": 0.79, "cost_total": 0.0009, ...})   # final metrics, time, cost

A training run's rank 0 does this (sweep trials log through Ray Tune's logger callbacks instead:
tune_callbacks), and `ray-t2t run` logs the report (log_report). Each backend's run id is kept in
<run folder>/tracking.json, so a run resumed after a failure continues its tracking runs. A backend
that fails while a run trains prints one warning and is dropped: tracking never stops training. The
MLflow server is checked before any work (check_tracking).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray_t2t import console
from ray_t2t.errors import UserError, shorten
from ray_t2t.storage import Remote, StoragePath, upload, write_atomic

if TYPE_CHECKING:
    from ray_t2t.config.sections import MlflowSection, TrackingSection, WandbSection

TRACKING_FILE = "tracking.json"
MISSING_PACKAGE = "tracking.{name} needs the {package} package: pip install 'ray-t2t[tracking]'"


def check_tracking(tracking: TrackingSection) -> None:
    """UserError before any work when a configured backend cannot be used: its package is missing, or
    the MLflow server does not answer within a few seconds (message naming what to check)."""
    import importlib.util

    for name, package, module in (("mlflow", "mlflow-skinny", "mlflow"), ("wandb", "wandb", "wandb")):
        if getattr(tracking, name) is not None and importlib.util.find_spec(module) is None:
            raise UserError(MISSING_PACKAGE.format(name=name, package=package))
    if tracking.wandb is not None and tracking.wandb.mode == "online" and not _wandb_login():
        raise UserError(
            "tracking.wandb: no W&B credentials on this machine: set WANDB_API_KEY in the environment (or run "
            "`wandb login`), or set tracking.wandb.mode: offline"
        )
    if tracking.mlflow is not None:
        _mlflow_environment()
        from mlflow import MlflowClient

        try:
            MlflowClient(tracking_uri=tracking.mlflow.tracking_uri).search_experiments(max_results=1)
        except Exception as err:  # any client failure (connection, HTTP, auth) becomes one message
            raise UserError(
                f"tracking.mlflow.tracking_uri={tracking.mlflow.tracking_uri!r} does not answer: "
                f"{shorten(str(err).splitlines()[0] if str(err) else repr(err), 300)}. Check the server is "
                "up and reachable from this machine, and MLFLOW_TRACKING_TOKEN (or USERNAME/PASSWORD) if it needs one"
            ) from None


def _mlflow_environment() -> None:
    """The MLflow client's limits (a server out of reach fails in seconds) and quiet (no run URLs on
    the console), unless the environment sets them."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def _wandb_login() -> bool:
    """Whether W&B can authenticate here: WANDB_API_KEY, or a `wandb login` entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc

    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    """A nested config as {"section.key": text}: what MLflow takes as parameters (values at most 500
    characters)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= flat_params(value, f"{name}.")
        else:
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
            flat[name] = text[:500]
    return flat


def numbers(values: dict, prefix: str = "") -> dict[str, float]:
    """The finite numbers of a (nested) dict, flattened with "/" (bools and text left out)."""
    found: dict[str, float] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            found |= numbers(value, f"{name}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            found[name] = float(value)
    return found


class Tracker:
    """The configured backends of one training run (none: every call does nothing)."""

    def __init__(self, backends: list[Any], folder: StoragePath | None = None, local: Path | None = None) -> None:
        self.backends, self.folder, self.local = backends, folder, local

    @classmethod
    def start(cls, tracking: TrackingSection, experiment: str, name: str, folder: StoragePath, params: dict) -> Tracker:
        if tracking.mlflow is None and tracking.wandb is None and not tracking.tensorboard:
            return cls([])
        ids_file = folder / TRACKING_FILE
        ids = json.loads(ids_file.read_text()) if ids_file.is_file() else {}
        # TensorBoard and W&B write files: in the run folder, or (an object store) locally, uploaded at the end
        local = Path(tempfile.mkdtemp(prefix="ray_t2t_tracking_")) if isinstance(folder, Remote) else Path(folder)
        backends: list[Any] = []
        for kind, wanted, build in (
            ("tensorboard", tracking.tensorboard, lambda: _TensorBoard(local / "tensorboard", params)),
            ("mlflow", tracking.mlflow, lambda: _Mlflow(tracking.mlflow, experiment, name, params, ids.get("mlflow"))),
            (
                "wandb",
                tracking.wandb,
                lambda: _Wandb(tracking.wandb, experiment, name, params, local, ids.get("wandb")),
            ),
        ):
            try:
                if wanted:
                    backends.append(build())
            except Exception as err:  # checked before any work (check_tracking); a later failure warns once
                console.error(f"tracking: {kind}: {shorten(str(err), 300)}; training goes on without it")
        write_atomic(ids_file, json.dumps({b.kind: b.run_id for b in backends if b.run_id}, indent=1))
        return cls(backends, folder, local if isinstance(folder, Remote) else None)

    def log(self, values: dict, step: int) -> None:
        self._each("log", numbers(values), int(step))

    def finish(self, summary: dict) -> None:
        self._each("finish", numbers(summary))
        if self.local is not None and self.folder is not None:  # an object store: the files go up now
            upload(self.local, self.folder)

    def _each(self, call: str, *args: Any) -> None:
        for backend in list(self.backends):
            try:
                getattr(backend, call)(*args)
            except Exception as err:  # a tracking server's hiccup must not stop hours of training
                console.error(f"tracking: {backend.kind}: {shorten(str(err), 300)}; training goes on without it")
                self.backends.remove(backend)


class _TensorBoard:
    kind, run_id = "tensorboard", None

    def __init__(self, logdir: Path, params: dict) -> None:
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=str(logdir))
        self.step = 0
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in sorted(flat_params(params).items())))

    def log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.step = step
        self.writer.flush()

    def finish(self, summary: dict[str, float]) -> None:
        for key, value in summary.items():
            self.writer.add_scalar(f"final/{key}", value, self.step)
        self.writer.close()


def _mlflow_experiment(client: Any, name: str) -> str:
    """The id of the MLflow experiment `name`, created if there is none."""
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found else client.create_experiment(name)


class _Mlflow:
    kind = "mlflow"

    def __init__(self, section: MlflowSection, experiment: str, name: str, params: dict, run_id: str | None) -> None:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        _mlflow_environment()
        self.client = MlflowClient(tracking_uri=section.tracking_uri)
        if run_id is None:
            experiment_id = _mlflow_experiment(self.client, section.experiment or experiment)
            run = self.client.create_run(experiment_id, run_name=name, tags={"ray_t2t.run": name})
            run_id = run.info.run_id
            flat = flat_params(params)
            for start in range(0, len(flat), 100):  # the REST API takes 100 parameters per request
                chunk = list(flat.items())[start : start + 100]
                self.client.log_batch(run_id, params=[Param(k, v) for k, v in chunk])
        self.run_id = run_id

    def log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key.replace("/", "."), value, now, step) for key, value in values.items()]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + 1000])

    def finish(self, summary: dict[str, float]) -> None:
        self.log({f"final/{k}": v for k, v in summary.items()}, step=0)
        self.client.set_terminated(self.run_id, "FINISHED")


class _Wandb:
    kind = "wandb"

    def __init__(
        self, section: WandbSection, experiment: str, name: str, params: dict, local: Path, run_id: str | None
    ) -> None:
        import wandb

        self.run = wandb.init(
            project=section.project,
            entity=section.entity,
            group=experiment,
            name=name,
            id=run_id or uuid.uuid4().hex[:12],
            resume="allow",
            mode=section.mode,
            dir=str(local),
            config=params,
            reinit="create_new",
            settings=wandb.Settings(console="off"),  # ray_t2t's console and log capture keep the output
        )
        self.run_id = self.run.id

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def finish(self, summary: dict[str, float]) -> None:
        self.run.summary.update({f"final/{k}": v for k, v in summary.items()})
        self.run.finish()


def tune_callbacks(tracking: TrackingSection, experiment: str) -> list[Any]:
    """Ray Tune's logger callbacks for a sweep's trials (MLflow, W&B); Tune writes TensorBoard event
    files of every trial by itself."""
    callbacks: list[Any] = []
    if tracking.mlflow is not None:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        callbacks.append(
            MLflowLoggerCallback(
                tracking_uri=tracking.mlflow.tracking_uri,
                experiment_name=tracking.mlflow.experiment or experiment,
                tags={"ray_t2t.sweep": experiment},
                save_artifact=False,
            )
        )
    if tracking.wandb is not None:
        from ray.air.integrations.wandb import WandbLoggerCallback

        callbacks.append(
            WandbLoggerCallback(
                project=tracking.wandb.project,
                entity=tracking.wandb.entity,
                group=experiment,
                mode=tracking.wandb.mode,
            )
        )
    return callbacks


def log_report(tracking: TrackingSection, experiment: str, folder: StoragePath, report: Any) -> None:
    """The report (its verdict and files) as a run of its own in each configured backend: "report" in
    the experiment's MLflow experiment and W&B group; <experiment>/tensorboard/report/ for TensorBoard."""
    files = [Path(f) for f in report.files if not isinstance(f, Remote)]
    if tracking.tensorboard and not isinstance(folder, Remote):
        from tensorboardX import SummaryWriter

        with SummaryWriter(logdir=str(Path(folder) / "tensorboard" / "report")) as writer:
            writer.add_text("verdict", "\n".join(f"    {line}" for line in report.summary.splitlines()))
    if tracking.mlflow is not None:
        from mlflow import MlflowClient

        _mlflow_environment()
        client = MlflowClient(tracking_uri=tracking.mlflow.tracking_uri)
        experiment_id = _mlflow_experiment(client, tracking.mlflow.experiment or experiment)
        run_id = client.create_run(experiment_id, run_name="report", tags={"ray_t2t.report": experiment}).info.run_id
        client.log_text(run_id, report.summary, "verdict.txt")
        for path in files:
            client.log_artifact(run_id, str(path), artifact_path="report")
        client.set_terminated(run_id, "FINISHED")
    if tracking.wandb is not None:
        import wandb

        local = Path(folder) if not isinstance(folder, Remote) else Path(tempfile.mkdtemp(prefix="ray_t2t_tracking_"))
        run = wandb.init(
            project=tracking.wandb.project,
            entity=tracking.wandb.entity,
            group=experiment,
            name="report",
            job_type="report",
            mode=tracking.wandb.mode,
            dir=str(local),
            reinit="create_new",
            settings=wandb.Settings(console="off"),
        )
        run.summary["verdict"] = report.summary
        for path in files:
            run.save(str(path), base_path=str(path.parent), policy="now")
        run.finish()
