"""cluster/: the configs check against what Ray and KubeRay accept, and a real cluster runs jobs.

Config checks (no Ray started): every autoscaler YAML passes the validation `ray up` applies (Ray's
ray-schema.json after its defaults are merged in), the KubeRay manifests have the fields KubeRay
requires, the job runtime env is a valid RuntimeEnv that cannot clash with what ray_t2t sets, and
no file holds a secret or opens Ray to the network.

The real cluster (one per module, on loopback): `ray start --head` with token authentication in its
own temp dir, process group and ports; submissions without the token are refused; the smoke config
goes through the `ray job submit` CLI (data) and JobSubmissionClient (a short training run), and a
job asking for a GPU the cluster lacks fails before any work. Teardown kills that cluster's
processes only (its process group, then anything naming its temp dir) and checks none remain.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO

CLUSTER = REPO / "cluster"
AUTOSCALER_YAMLS = sorted(CLUSTER.glob("*.yaml"))
AUTOSCALER_YAMLS = [p for p in AUTOSCALER_YAMLS if "provider" in (yaml.safe_load(p.read_text()) or {})]
KUBERAY_YAMLS = sorted((CLUSTER / "kuberay").glob("*.yaml"))
KUBERAY_IMAGE = "REGISTRY/ray-t2t:0.1.0"  # the image of cluster/Dockerfile, a placeholder registry in every file
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
RAY_VERSION = re.search(r"^ray==(\S+)$", (REPO / "requirements.lock").read_text(), re.M).group(1)
# ensure_ray() sets these for every job it starts; Ray refuses a job whose runtime env sets them too
RAY_T2T_ENV_VARS = {"DS_ACCELERATOR", "TOKENIZERS_PARALLELISM", "RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING"}


# ----------------------------------------------------------------------------- autoscaler configs


def test_cluster_folder_holds_what_the_readme_promises():
    names = {p.relative_to(CLUSTER).as_posix() for p in CLUSTER.rglob("*") if p.is_file()}
    assert {
        "aws.yaml",
        "gcp.yaml",
        "runtime_env.yaml",
        "README.md",
        "Dockerfile",
        "kuberay/raycluster.yaml",
        "kuberay/raycluster-job.yaml",
        "kuberay/storage.yaml",
    } <= names
    assert {p.name for p in AUTOSCALER_YAMLS} == {"aws.yaml", "gcp.yaml"}


@pytest.mark.parametrize("path", AUTOSCALER_YAMLS, ids=lambda p: p.name)
def test_autoscaler_config_passes_ray_up_validation(path):
    """What `ray up` does before it touches a cloud: merge the provider's defaults, then validate
    against ray/autoscaler/ray-schema.json (plus Ray's own cross-checks)."""
    import copy

    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load(path.read_text())
    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)
    assert path.read_text().startswith(f"# ray up cluster/{path.name}")


@pytest.mark.parametrize("path", AUTOSCALER_YAMLS, ids=lambda p: p.name)
def test_autoscaler_config_shape(path):
    raw = yaml.safe_load(path.read_text())
    types = raw["available_node_types"]
    head = types[raw["head_node_type"]]
    assert head["resources"] == {"CPU": 0}, "the head schedules no training work"
    workers = {name: t for name, t in types.items() if name != raw["head_node_type"]}
    gpu = {name: t for name, t in workers.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu, "a GPU worker group"
    for name, t in workers.items():
        assert 0 <= t["min_workers"] <= t["max_workers"], name
    for name, t in gpu.items():
        accel = [k for k in t["resources"] if k.startswith("accelerator_type:")]
        assert len(accel) == 1, f"{name}: declares its accelerator type, so scaling.accelerator_type can start it"

    def is_spot(t):
        config = t["node_config"]
        scheduling = config.get("scheduling") or {}
        return (
            config.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
            or scheduling.get("preemptible") is True
            or scheduling.get("provisioningModel") == "SPOT"
        )

    assert any(is_spot(t) for t in gpu.values()), "a spot / preemptible GPU group"
    # shared storage at the path the README tells runs to use
    assert any("/mnt/shared:/mnt/shared" in option for option in raw["docker"]["run_options"])
    assert any("/mnt/shared" in command for command in raw["initialization_commands"])
    # token authentication on every node; the dashboard on the head's loopback only
    head_start = " ".join(raw["head_start_ray_commands"])
    worker_start = " ".join(raw["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head_start and "RAY_AUTH_MODE=token" in worker_start
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in head_start
    assert raw["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token", "the token comes from outside the repo"
    # every node runs the image of cluster/Dockerfile (built on the client's Ray) and installs nothing
    assert raw["docker"]["image"] == raw["docker"]["head_image"] == KUBERAY_IMAGE
    assert not any("pip install" in command for command in raw.get("setup_commands", []))
    if raw["provider"]["type"] == "aws":  # a pinned machine image, not Ray's default Deep Learning AMI
        assert all(t["node_config"].get("ImageId") for t in types.values())


def test_the_image_runs_the_clients_ray_with_the_gpu_lock():
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{RAY_VERSION}-py311-gpu" in dockerfile, "the cluster runs the client's Ray"
    assert "pip install --no-cache-dir -r requirements-gpu.lock" in dockerfile


def test_the_gpu_lock_is_the_lock_plus_the_gpu_extra():
    import tomllib

    lines = [line for line in (REPO / "requirements-gpu.lock").read_text().splitlines() if not line.startswith("#")]
    assert "-r requirements.lock" in lines  # the same pins, torch==2.13.0 included (its CUDA build on PyPI)
    pins = {line.split("==")[0].lower(): line.split("==")[1] for line in lines if "==" in line}
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    wanted = {re.split(r"[<>=\[ ]", requirement)[0].lower() for requirement in extra}
    assert wanted == set(pins), "every package of the gpu extra, pinned"


def test_kuberay_pods_bound_their_shared_memory():
    """/dev/shm (Ray's object store, 30% of a pod's memory by default, and NCCL) is a memory-backed
    volume with a size limit that holds the object store and stays within the pod's memory limit."""
    for where, doc in kuberay_documents():
        spec = doc.get("spec", {}).get("rayClusterSpec", doc.get("spec", {}))
        if "headGroupSpec" not in spec:
            continue
        for template in [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]:
            volumes = {v["name"]: v for v in template["spec"]["volumes"]}
            limit = volumes["dshm"]["emptyDir"]["sizeLimit"]
            memory = template["spec"]["containers"][0]["resources"]["limits"]["memory"]
            assert limit.endswith("Gi") and memory.endswith("Gi"), where
            assert 0.3 * int(memory[:-2]) <= int(limit[:-2]) < int(memory[:-2]), (
                f"{where}: /dev/shm {limit} of {memory}"
            )


# ------------------------------------------------------------------------------------- KubeRay


def kuberay_documents() -> list[tuple[str, dict]]:
    docs = []
    for path in KUBERAY_YAMLS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def check_kubernetes_object(where: str, doc: dict) -> None:
    assert isinstance(doc.get("apiVersion"), str) and isinstance(doc.get("kind"), str), where
    name = doc.get("metadata", {}).get("name")
    assert name and DNS_1123.match(name) and len(name) <= 63, f"{where}: metadata.name {name!r}"
    assert isinstance(doc.get("spec"), dict), f"{where}: spec"


def check_pod_template(where: str, template: dict) -> list[dict]:
    containers = template["spec"]["containers"]
    assert containers, f"{where}: containers"
    for container in containers:
        assert container.get("name") and container.get("image"), f"{where}: container name and image"
        for env in container.get("env", []):
            assert "value" not in env or "TOKEN" not in env["name"], f"{where}: {env['name']} set in the file"
    return containers


def check_ray_cluster_spec(where: str, spec: dict) -> None:
    assert spec.get("authOptions", {}).get("mode") == "token", f"{where}: token authentication"
    assert spec.get("rayVersion") == RAY_VERSION, f"{where}: rayVersion is the client's Ray"
    head = spec["headGroupSpec"]
    assert isinstance(head.get("rayStartParams"), dict), f"{where}: headGroupSpec.rayStartParams"
    assert head["rayStartParams"].get("num-cpus") == "0", f"{where}: the head schedules no training work"
    assert head.get("serviceType", "ClusterIP") == "ClusterIP", f"{where}: the head is not exposed outside the cluster"
    assert not head.get("enableIngress"), f"{where}: no Ingress"
    check_pod_template(f"{where}: head", head["template"])
    groups = spec["workerGroupSpecs"]
    assert groups, f"{where}: workerGroupSpecs"
    gpu_groups = []
    for group in groups:
        label = f"{where}: worker group {group.get('groupName')!r}"
        assert group.get("groupName") and DNS_1123.match(group["groupName"]), label
        for key in ("replicas", "minReplicas", "maxReplicas"):
            assert isinstance(group.get(key), int), f"{label}: {key}"
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], label
        assert isinstance(group.get("rayStartParams"), dict), f"{label}: rayStartParams"
        containers = check_pod_template(label, group["template"])
        if any(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu") for c in containers):
            gpu_groups.append(group)
    assert gpu_groups, f"{where}: a GPU worker group"
    volumes = {v["name"]: v for v in head["template"]["spec"].get("volumes", [])}
    assert volumes.get("shared", {}).get("persistentVolumeClaim", {}).get("claimName") == "ray-t2t-shared", where
    mounts = {m["mountPath"] for c in head["template"]["spec"]["containers"] for m in c.get("volumeMounts", [])}
    assert "/mnt/shared" in mounts, f"{where}: the shared storage is mounted where runs go"


def test_kuberay_manifests_parse_and_have_the_fields_kuberay_requires():
    docs = kuberay_documents()
    kinds = {}
    for where, doc in docs:
        check_kubernetes_object(where, doc)
        kinds.setdefault(doc["kind"], []).append((where, doc))
        assert doc["kind"] != "Secret", f"{where}: secrets are created with kubectl, never committed"
        assert doc["kind"] not in ("Ingress", "Service"), f"{where}: nothing exposes Ray outside the cluster"
    assert set(kinds) == {"RayCluster", "RayJob", "PersistentVolumeClaim"}
    for where, doc in kinds["RayCluster"]:
        assert doc["apiVersion"] == "ray.io/v1", where
        check_ray_cluster_spec(where, doc["spec"])
        assert any(
            "spot" in str(g["template"]["spec"].get("nodeSelector", {})) for g in doc["spec"]["workerGroupSpecs"]
        )
    for where, doc in kinds["RayJob"]:
        assert doc["apiVersion"] == "ray.io/v1", where
        assert doc["spec"]["entrypoint"].startswith("ray-t2t "), where
        check_ray_cluster_spec(where, doc["spec"]["rayClusterSpec"])
    ((where, claim),) = kinds["PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == "ray-t2t-shared" and claim["spec"]["accessModes"] == ["ReadWriteMany"], where


def test_the_rayjob_entrypoint_is_a_valid_ray_t2t_command():
    """The RayJob's command line, read as the job's shell reads it, is a config ray_t2t accepts."""
    from ray_t2t.config.experiment import load_config

    ((_, job),) = [(w, d) for w, d in kuberay_documents() if d["kind"] == "RayJob"]
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[:2] == ["ray-t2t", "run"]
    config = REPO / Path(words[2]).relative_to("/home/ray/ray_t2t")  # where cluster/Dockerfile puts the repo
    cfg = load_config(config, words[3:])
    assert cfg.run.storage_path == "/mnt/shared/ray_t2t_runs" and cfg.scaling.use_gpu


def test_runtime_env_is_valid_and_cannot_clash_with_ray_t2t():
    from ray.runtime_env import RuntimeEnv

    raw = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    RuntimeEnv(**raw)
    assert not RAY_T2T_ENV_VARS & set(raw.get("env_vars", {}))
    assert not any("TOKEN" in key or "SECRET" in key or "KEY" in key for key in raw.get("env_vars", {}))


def test_no_cluster_file_holds_a_secret():
    pattern = re.compile(r"(RAY_AUTH_TOKEN|HF_TOKEN|auth_token)\s*[:=]\s*['\"]?[A-Za-z0-9_\-]{16,}")
    for path in CLUSTER.rglob("*"):
        if path.is_file():
            assert not pattern.search(path.read_text()), path


# ---------------------------------------------------------------------------------- real cluster


RAY = str(Path(sys.executable).parent / "ray")
BIN = str(Path(sys.executable).parent)


def free_ports(count: int) -> list[int]:
    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def processes_of(marker: str) -> list:
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(marker in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def base_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # keep 127.0.0.1 as the node address
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


class Head:
    def __init__(self, temp_dir: str, token: str, dashboard_port: int, gcs_port: int, storage: Path, home: Path):
        self.temp_dir, self.token, self.storage, self.home = temp_dir, token, storage, home
        self.address = f"http://127.0.0.1:{dashboard_port}"
        self.gcs = f"127.0.0.1:{gcs_port}"

    def client_env(self, token: str | None) -> dict:
        """A client's environment: a home without ~/.ray, and the token (or none) in the environment."""
        env = base_env()
        env["HOME"] = str(self.home)
        if token is not None:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
        return env

    def client(self, token: str | None = None):
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.address, headers={"Authorization": f"Bearer {token or self.token}"})

    def wait(self, submission_id: str, timeout: float) -> tuple[str, str]:
        """(final status, logs) of a job; a job still running at `timeout` is stopped."""
        client = self.client()
        deadline = time.time() + timeout
        status = client.get_job_status(submission_id)
        while not status.is_terminal() and time.time() < deadline:
            time.sleep(2)
            status = client.get_job_status(submission_id)
        logs = client.get_job_logs(submission_id)
        if not status.is_terminal():
            client.stop_job(submission_id)
            logs += f"\n(test: still {status} after {timeout:.0f}s, stopped)"
        return str(status), logs


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    temp_dir = tempfile.mkdtemp(prefix="rt2t_", dir="/tmp")  # short: Ray's socket paths live under it
    root = tmp_path_factory.mktemp("cluster")
    home = root / "home"
    home.mkdir()
    gcs, dashboard, client_port, agent, agent_grpc, runtime_env_agent, metrics = free_ports(7)
    worker_ports = 20000 + secrets.randbelow(9000)
    token = secrets.token_hex(24)
    env = base_env()
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)  # never the user's ~/.ray/auth_token
    command = [
        RAY,
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={gcs}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
        "--include-dashboard=true",
        f"--ray-client-server-port={client_port}",
        f"--dashboard-agent-listen-port={agent}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={runtime_env_agent}",
        f"--metrics-export-port={metrics}",
        f"--min-worker-port={worker_ports}",
        f"--max-worker-port={worker_ports + 199}",
        "--num-cpus=2",
        "--num-gpus=0",
        "--object-store-memory=300000000",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    log = root / "ray_start.log"  # a file, not a pipe: the daemons it starts could hold a pipe open
    with open(log, "w") as out:
        started = subprocess.Popen(
            command,
            env=env,
            cwd=root,
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        started.wait(timeout=180)
        assert started.returncode == 0, f"ray start failed:\n{log.read_text()[-4000:]}"
        cluster = Head(temp_dir, token, dashboard, gcs, root / "runs", home)
        deadline = time.time() + 120
        while True:  # the dashboard answers a little after `ray start` returns
            try:
                cluster.client().list_jobs()
                break
            except (ConnectionError, RuntimeError):
                assert time.time() < deadline, f"the dashboard at {cluster.address} never answered"
                time.sleep(2)
        while True:  # and takes jobs once the head's job agent is up: a first job shows it is
            try:
                warmup = cluster.client().submit_job(entrypoint="echo ready", submission_id="rt2t-warmup")
                break
            except RuntimeError as err:
                assert time.time() < deadline, f"the cluster takes no jobs: {err}"
                time.sleep(2)
        status, logs = cluster.wait(warmup, timeout=120)
        assert status == "SUCCEEDED" and "ready" in logs, f"{status}: {logs[-2000:]}"
        yield cluster
    finally:
        stop_cluster(started.pid, [temp_dir, str(root)])


def stop_cluster(group: int, markers: list[str]) -> None:
    """Only this cluster: its process group (`ray start` and what it spawned), then any process whose
    command line names its temp dir or the test's folder (workers, job drivers in their own
    sessions), each by its pid. markers[0] is the temp dir, removed at the end."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            break
        time.sleep(3)

    def left():
        return {p.pid: p for marker in markers for p in processes_of(marker)}.values()

    deadline = time.time() + 20
    while (procs := left()) and time.time() < deadline:
        for proc in procs:
            try:
                proc.kill()
            except Exception:
                pass
        time.sleep(1)
    survivors = [p.info["cmdline"][:3] for p in left()]
    shutil.rmtree(markers[0], ignore_errors=True)
    assert not survivors, f"processes of the test cluster survived teardown: {survivors}"


@pytest.mark.ray
def test_the_cluster_runs_on_loopback_with_token_auth(head):
    names = {p.info["cmdline"][0].rsplit("/", 1)[-1] for p in processes_of(head.temp_dir) if p.info["cmdline"]}
    assert any("gcs_server" in n for n in names) and any("raylet" in n for n in names), names
    import psutil

    listening = {c.laddr for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
    dashboard_port = int(head.address.rsplit(":", 1)[1])
    assert ("127.0.0.1", dashboard_port) in listening and ("0.0.0.0", dashboard_port) not in listening


@pytest.mark.ray
def test_submissions_without_the_token_are_refused(head):
    from ray.exceptions import AuthenticationError

    refused = subprocess.run(
        [
            RAY,
            "job",
            "submit",
            "--address",
            head.address,
            "--no-wait",
            "--submission-id",
            "rt2t-no-token",
            "--",
            "echo",
            "should-not-run",
        ],
        env=head.client_env(token=None),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "Authentication required" in output, output[-3000:]
    with pytest.raises(AuthenticationError, match="Authentication failed"):
        head.client(token="not-" + head.token).submit_job(
            entrypoint="echo should-not-run", submission_id="rt2t-wrong-token"
        )
    ids = {job.submission_id for job in head.client().list_jobs()}
    assert not {"rt2t-no-token", "rt2t-wrong-token"} & ids


@pytest.mark.ray
def test_ray_job_submit_cli_runs_the_smoke_data_stage(head):
    """The README's command: `ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- ray-t2t ...`."""
    started = time.time()
    done = subprocess.run(
        [
            RAY,
            "job",
            "submit",
            "--address",
            head.address,
            "--submission-id",
            "rt2t-cli-data",
            "--working-dir",
            str(REPO),
            "--runtime-env",
            str(CLUSTER / "runtime_env.yaml"),
            "--",
            "ray-t2t",
            "data",
            "configs/quickstart_smoke.yaml",
            f"run.storage_path={head.storage}",
        ],
        env=head.client_env(head.token),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "succeeded" in output, output[-4000:]
    assert "data: " in output and "(built)" in output, output[-4000:]
    summaries = list((head.storage / "quickstart_smoke" / "data").glob("*/summary.json"))
    assert len(summaries) == 1, f"no data cache written under {head.storage}"
    print(f"cli data job: {time.time() - started:.1f}s")


@pytest.mark.ray
def test_job_submission_client_trains_the_smoke_student_and_writes_its_record(head):
    import json

    runtime_env = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    runtime_env["working_dir"] = str(REPO)
    entrypoint = (
        "python -c 'import ray_t2t; print(\"ray_t2t from\", ray_t2t.__file__)' && "
        "ray-t2t train configs/quickstart_smoke.yaml method=scratch "
        f"run.storage_path={head.storage} training.max_steps=10 eval.every_n_steps=10 "
        "run.checkpoint_every_n_steps=10"
    )
    started = time.time()
    job = head.client().submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id="rt2t-sdk-train")
    status, logs = head.wait(job, timeout=600)
    assert status == "SUCCEEDED", logs[-6000:]
    source = re.search(r"ray_t2t from (\S+)", logs).group(1)
    assert "runtime_resources" in source and "working_dir" in source, f"the job ran {source}, not the submitted code"
    # the config's scaling.local_mode does not make a cluster job train on the head node, where its driver runs
    assert "scratch: training on Ray (1 worker(s))" in logs, logs[-6000:]
    record = json.loads((head.storage / "quickstart_smoke" / "runs" / "scratch" / "record.json").read_text())
    assert record["status"] == "finished" and record["steps"]["done"] == 10
    assert record["hardware"]["device_type"] == "cpu" and record["cost"]["total"] > 0
    print(f"sdk train job: {time.time() - started:.1f}s")


@pytest.mark.ray
def test_a_job_asking_for_a_gpu_the_cluster_lacks_fails_before_any_work(head):
    started = time.time()
    job = head.client().submit_job(
        entrypoint=f"ray-t2t train configs/quickstart_smoke.yaml method=scratch run.name=gpu_refused "
        f"run.storage_path={head.storage} scaling.use_gpu=true",
        runtime_env={"working_dir": str(REPO), "excludes": [".git"]},
        submission_id="rt2t-sdk-gpu",
    )
    status, logs = head.wait(job, timeout=300)
    assert status == "FAILED", logs[-4000:]
    assert "no node of this Ray cluster has GPU: 1" in logs and "set scaling.use_gpu=false" in logs, logs[-4000:]
    experiment = head.storage / "gpu_refused"
    assert not (experiment / "data").exists() and not (experiment / "runs").exists()
    print(f"refused gpu job: {time.time() - started:.1f}s")
