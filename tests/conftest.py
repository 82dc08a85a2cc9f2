"""Shared fixtures. Everything is built in code or written to tmp_path: no network, no hub.

Tests that start Ray, a cluster or a `ray-t2t` subprocess run are marked `ray` (pyproject.toml):
`pytest -m "not ray"` runs the rest in a few minutes; plain `pytest` (make test) runs everything."""

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from benchmarks.suite import worker_payload as local_payload  # what run_worker takes for a run outside Ray

# Never reach for the Hugging Face hub from tests: local paths only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Core claims of the runs these tests start (ray_t2t.placement) apart from any real run's on the machine.
os.environ.setdefault("RAY_T2T_CORE_LOCKS", tempfile.mkdtemp(prefix="ray_t2t_test_cores-"))

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_hf_cache(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "hf_cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))


def minimal_config(tmp_path: Path, **sections) -> dict:
    """The smallest valid experiment config as a dict, storage under tmp_path; sections replace defaults."""
    raw = {
        "run": {"name": "test", "storage_path": str(tmp_path / "runs")},
        "data": {"split_sizes": {"train": 300, "validation": 20, "test": 20}},
        "models": {"student": {"preset": "t5-tiny"}},
    }
    raw.update(sections)
    return raw


LOCAL_WORKER = """
import importlib, json, sys
from ray_t2t.training.context import LocalContext
from ray_t2t.training.loop import run_worker
payload = json.loads(sys.argv[1])
sys.path.insert(0, sys.argv[2])
for module in sys.argv[3:]:  # e.g. a test's own method, registered as its module is imported
    importlib.import_module(module)
run_worker(payload, LocalContext(payload["run_dir"]))
"""


def train_locally(
    cfg,
    label: str,
    data_path,
    run_dir: Path,
    threads: int = 1,
    timeout: int = 600,
    extras: dict | None = None,
    imports: tuple[str, ...] = (),
) -> dict:
    """One run of the training loop in a fresh process without Ray (LocalContext, one device); its run
    record. `extras`: what the method's driver-side prepare() returned; `imports`: modules of tests/ the
    process imports first (a method of a test's own). RuntimeError with the end of the
    process's output when it fails. (benchmarks/suite.py's run_locally does the same for the benchmarks,
    which must not import from tests/.)"""
    payload = local_payload(cfg, label, data_path, run_dir, threads, extras)
    try:
        done = subprocess.run(
            [sys.executable, "-c", LOCAL_WORKER, json.dumps(payload), str(Path(__file__).parent), *imports],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"run {label} took more than {timeout} s") from None
    if done.returncode != 0:
        raise RuntimeError(f"run {label} exited with {done.returncode}:\n{done.stdout[-1000:]}{done.stderr[-3000:]}")
    return json.loads((Path(run_dir) / "record.json").read_text())


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine they lose a lot."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def ray_t2t_bin() -> str:
    return str(Path(sys.executable).parent / "ray-t2t")


def train_briefly(model, setup, sources, targets, steps: int, batch_size: int = 64, lr: float = 5e-3):
    """A few plain-torch AdamW steps of the task's cross-entropy (a tiny teacher that knows something,
    in seconds, without the training loop). Leaves the model in eval mode."""
    import torch

    from ray_t2t.methods import collate

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    model.train()
    with torch.random.fork_rng(devices=[]):  # seeded dropout: the same model whatever ran before
        torch.manual_seed(0)
        for _ in range(steps):
            rows = torch.randint(len(sources), (batch_size,), generator=generator).tolist()
            loss = model(**collate(setup, [sources[i] for i in rows], [targets[i] for i in rows])).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def save_like_an_export(model, tokenizer, folder: Path) -> Path:
    """A model folder as a ray_t2t run exports it: save_pretrained plus model/ray_t2t_tokenizer."""
    model.save_pretrained(folder)
    tokenizer.save(folder / "ray_t2t_tokenizer")
    return folder


LOCAL_DATA = {"split_sizes": {"train": 2000, "validation": 64, "test": 64}}  # the Ray-free training tests' data
TEACHER_T5 = {
    "preset": "t5-tiny",
    "overrides": {"d_model": 64, "d_ff": 128, "d_kv": 32, "num_layers": 2, "num_decoder_layers": 2},
}
# The same model without dropout: the Ray tests' runs are short, and must learn within them.
TINY_T5 = {"preset": "t5-tiny", "overrides": {**TEACHER_T5["overrides"], "dropout_rate": 0.0}}


@pytest.fixture(scope="session")
def g2p_teacher(tmp_path_factory):
    """(raw config, prepared data, teacher folder): a T5 of d 64 and 2+2 blocks trained for 100 plain-torch steps
    on the G2P data LOCAL_DATA describes, saved as a ray_t2t run exports it (with that data's
    tokenizer), so distillation tests have a teacher that knows something, in ~10 s."""
    import torch

    from ray_t2t.config.experiment import validate_config
    from ray_t2t.config.sections import ModelSpec
    from ray_t2t.data import Split, prepare_data
    from ray_t2t.methods import Setup
    from ray_t2t.models import build_model

    folder = tmp_path_factory.mktemp("g2p_teacher")
    raw = minimal_config(folder)
    raw["data"] = LOCAL_DATA
    cfg = validate_config(raw)
    prepared = prepare_data(cfg, log=lambda message: None)
    tokenizer = prepared.tokenizer()
    train = Split(prepared, "train")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, _ = build_model(ModelSpec(**TEACHER_T5), tokenizer, seed=0)
        setup = Setup(cfg, None, tokenizer, seed=0, encoder_decoder=True)
        train_briefly(model, setup, train.source_ids, train.target_ids, steps=100)
    finally:
        torch.set_num_threads(threads)
    return raw, prepared, save_like_an_export(model, tokenizer, folder / "teacher")


@pytest.fixture(scope="session")
def s3_server():
    """An S3 endpoint on loopback (moto's server, in a thread of the test process): what pyarrow's
    S3 filesystem, Ray Train, Tune and Ray Data workers talk to as they would to AWS."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch, request):
    """A new bucket on the loopback S3 endpoint; the environment points AWS clients (pyarrow, and
    the processes this test starts) at it with throwaway credentials. Returns the bucket's s3:// URI."""
    import re
    import uuid

    import pyarrow.fs

    from ray_t2t import storage

    for key, value in (
        ("AWS_ENDPOINT_URL", s3_server),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ):
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(storage, "_filesystems", {})  # built for this endpoint
    monkeypatch.setenv(storage.CACHE_ENV, str(Path(request.getfixturevalue("tmp_path")) / "node_cache"))
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:6]
    pyarrow.fs.FileSystem.from_uri(f"s3://{name}?allow_bucket_creation=true")[0].create_dir(name)
    return f"s3://{name}"


@pytest.fixture(autouse=True, scope="module")
def no_ray_left_running():
    """A module's tests leave no Ray running in the pytest process: a later module that starts its own
    would fail with "ray.init twice" (a test that patched the wrong module's ensure_ray did so once)."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
        pytest.fail("a test of this module left a Ray running in the pytest process")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server (mlflow-skinny's, a file store) on 127.0.0.1, started for the
    module's tests; yields its URI."""
    import os
    import socket
    import subprocess
    import time
    import urllib.request

    folder = tmp_path_factory.mktemp("mlflow")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, MLFLOW_ALLOW_FILE_STORE="true")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"file://{folder}/store",
            "--default-artifact-root",
            f"file://{folder}/artifacts",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "server.log", "w"),
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                server.kill()
                pytest.fail(f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield uri
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


@contextlib.contextmanager
def loopback_cluster(monkeypatch, cpus_per_node: int):
    """A multi-node Ray cluster on this machine (`ray.cluster_utils.Cluster`): a head that runs no
    work (0 CPUs) and two worker nodes of `cpus_per_node` logical CPUs, each its own raylet, all on
    127.0.0.1; RAY_ADDRESS names it, as under `ray job submit`."""
    import ray
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    # Node addresses stay 127.0.0.1 (as start_local_ray arranges for a one-machine Ray).
    monkeypatch.setenv(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, "0")
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
    loopback = {"node_ip_address": "127.0.0.1", "object_store_memory": 150 * 2**20}
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False, **loopback})
    for _ in range(2):
        nodes.add_node(num_cpus=cpus_per_node, **loopback)
    nodes.wait_for_nodes()
    monkeypatch.setenv("RAY_ADDRESS", nodes.address)
    try:
        yield nodes
    finally:
        ray.shutdown()
        nodes.shutdown()


def write_teacher_shards(cfg, prepared, teacher_path, label: str, shards: int) -> None:
    """A teacher's soft-target shards under <experiment>/soft_targets/<label>, written in this process
    as the Ray Data replicas write them (prepare_method then finds them all, verifies them and writes
    the manifest: no Ray needed)."""
    from ray_t2t.soft_targets import TeacherReplica

    folder = cfg.experiment_dir / "soft_targets" / label
    folder.mkdir(parents=True)
    replica = TeacherReplica(
        {
            "config": cfg.model_dump(mode="json"),
            "data_path": str(prepared.path),
            "teacher_path": str(teacher_path),
            "folder": str(folder),
        }
    )
    for shard in range(shards):
        replica.write_shard(shard)
