"""Time, device-seconds, money and the run record: one format for every run, teacher runs included.

The report reads only run records. A record is one JSON file, written by rank 0 next to the run:

    <storage_path>/<run.name>/runs/<label>/record.json

Definitions used everywhere:
- a *device* is what a worker computes on: one GPU, or the CPU cores reserved for a CPU worker, so
  device-seconds = seconds x workers x (GPUs, or CPU cores, per worker);
- training time counts the optimizer steps only; evaluation and checkpointing are timed apart, so a
  method is not charged for how often it is measured;
- cost = device-hours x the price of that device in the config's `cost` table.
"""

from __future__ import annotations

import json
import math
import os
import platform
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ray_t2t.errors import ConfigError
from ray_t2t.storage import write_atomic

if TYPE_CHECKING:
    import torch

    from ray_t2t.config.experiment import ExperimentConfig
    from ray_t2t.storage import StoragePath

RECORD_FILE = "record.json"

# Peak dense bf16 FLOP/s per device, for MFU. CPUs vary too much to list: MFU is null there.
PEAK_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
    "V100": 125e12,
    "T4": 65e12,
}


@dataclass(frozen=True)
class Hardware:
    """What one training run occupies."""

    workers: int
    device_type: str  # "cpu" or the accelerator name ("H100", ...)
    devices_per_worker: float  # GPUs per worker, or CPU cores per worker
    nodes: int = 1  # distinct machines the workers ran on

    @property
    def devices(self) -> float:
        return self.workers * self.devices_per_worker

    def price_per_device_hour(self, cfg: ExperimentConfig) -> float:
        if self.device_type == "cpu":
            return cfg.cost.cpu_hour
        prices = cfg.cost.device_hour
        if self.device_type not in prices:
            raise ConfigError(
                f"cost.device_hour has no price for {self.device_type!r} (prices for: {', '.join(prices) or 'none'})"
            )
        return prices[self.device_type]

    def as_dict(self) -> dict:
        return {
            "workers": self.workers,
            "device_type": self.device_type,
            "devices_per_worker": self.devices_per_worker,
            "devices": self.devices,
            "nodes": self.nodes,
            "host_cpu": platform.processor() or platform.machine(),
            "host_cpu_count": os.cpu_count(),
        }


def hardware_of(cfg: ExperimentConfig, gpu_name: str | None = None, nodes: int = 1) -> Hardware:
    """The hardware a run with this config's scaling section occupies (its workers on `nodes` machines)."""
    scaling = cfg.scaling
    resources = scaling.resources_per_worker or {}
    if scaling.use_gpu:
        device_type = scaling.accelerator_type or short_gpu_name(gpu_name) or "gpu"
        return Hardware(scaling.num_workers, device_type, float(resources.get("GPU", 1)), nodes)
    return Hardware(scaling.num_workers, "cpu", float(resources.get("CPU", 1)), nodes)


def short_gpu_name(name: str | None) -> str | None:
    if not name:
        return None
    for known in PEAK_FLOPS:
        if known in name.upper():
            return known
    return name


def cost_of(device_seconds: float, hardware: Hardware, cfg: ExperimentConfig) -> float:
    return device_seconds / 3600 * hardware.price_per_device_hour(cfg)


def mfu(flops_per_s: float, hardware: Hardware) -> float | None:
    """Model FLOPs utilization of the run's devices; None where the peak is unknown (CPUs)."""
    peak = PEAK_FLOPS.get(hardware.device_type)
    if peak is None:
        return None
    return flops_per_s / (peak * hardware.devices)


class EnergyMeter:
    """Joules this worker's GPU draws while it trains, from NVML's energy counter (Volta and newer).

    Unavailable (``available`` False, energy recorded as null) on CPU workers, without the
    `nvidia-ml-py` package, or where the driver does not expose the counter. `resume()` and `pause()`
    bracket the training steps; `take()` returns the joules banked since the last take.
    """

    def __init__(self, device: torch.device) -> None:
        self._nvml = self._handle = self._since = None
        self._banked = 0.0
        if getattr(device, "type", "cpu") != "cuda":
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = _nvml_handle(pynvml, device)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)  # raises where unsupported
            self._nvml = pynvml
        except Exception:  # no NVML or no counter: energy is unknown, not an error
            self._handle = None

    @property
    def available(self) -> bool:
        return self._nvml is not None

    def _millijoules(self) -> int:
        return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)

    def resume(self) -> None:
        if self.available and self._since is None:
            self._since = self._millijoules()

    def pause(self) -> None:
        if self.available and self._since is not None:
            self._banked += (self._millijoules() - self._since) / 1000
            self._since = None

    def take(self) -> float:
        banked, self._banked = self._banked, 0.0
        return banked


def _nvml_handle(pynvml: Any, device: torch.device) -> Any:
    """The NVML handle of a torch CUDA device (NVML numbers all GPUs; CUDA only the visible ones)."""
    import torch

    uuid = str(getattr(torch.cuda.get_device_properties(device), "uuid", "") or "")
    if uuid:
        return pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    index = device.index or 0
    if visible and visible[index].isdigit():
        index = int(visible[index])
    return pynvml.nvmlDeviceGetHandleByIndex(index)


CROSSING_KEYS = ("step", "wall_s", "device_s", "cost", "tokens", "energy_j")


def meets(value: float, op: str, threshold: float) -> bool:
    return value <= threshold if op == "<=" else value >= threshold


def crossing(curve: list[dict], metric_key: str, op: str, threshold: float) -> dict | None:
    """Where a learning curve first meets `metric_key op threshold`: the first evaluation that meets
    it, interpolated linearly back towards the evaluation before it (the metric is taken to move in a
    straight line between them), so the crossing is not rounded up to the evaluation schedule.
    {step, wall_s, device_s, cost, tokens, energy_j} (None where the curve lacks one; step is
    fractional), or None when no evaluation meets the target."""
    previous = None
    for point in curve:
        value = point.get(metric_key)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        if meets(value, op, threshold):
            hit = {key: point.get(key) for key in CROSSING_KEYS}
            if previous is None or previous[1] == value:
                return hit
            before, before_value = previous
            fraction = (threshold - before_value) / (value - before_value)  # in (0, 1]: before missed it
            for key in CROSSING_KEYS:
                start, end = before.get(key), point.get(key)
                if isinstance(start, (int, float)) and isinstance(end, (int, float)):
                    hit[key] = start + fraction * (end - start)
            return hit
        previous = (point, value)
    return None


def write_record(folder: StoragePath, record: dict[str, Any]) -> StoragePath:
    """Write record.json atomically (a reader never sees half a record); `folder` is a Path or a
    storage.Remote."""

    path = folder / RECORD_FILE
    write_atomic(path, json.dumps(record, indent=1, sort_keys=True))
    return path


def read_record(folder: StoragePath) -> dict[str, Any] | None:
    path = folder / RECORD_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())
