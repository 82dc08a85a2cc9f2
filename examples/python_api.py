"""ray_t2t from Python: train each method of a config with several seeds, then print the verdict.

    python examples/python_api.py [CONFIG] [section.key=value ...]

CONFIG defaults to examples/python_api.yaml (two learning rates of a small T5, a few minutes on a
laptop). Every method of the config is trained with seeds 0, 1 and 2 in this process, one after the
other, then the report compares them; `ray_t2t.sweep(cfg)` would run the same as Ray Tune trials.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ray_t2t
from ray_t2t.errors import UserError


def main(argv: list[str]) -> int:
    config = argv[0] if argv else str(Path(__file__).with_name("python_api.yaml"))
    overrides = argv[1:]
    try:
        cfg = ray_t2t.load_config(config, overrides)
        for entry in cfg.methods:
            label = entry.label or entry.name
            for seed in (0, 1, 2):  # replicates: the report gives each method's figures with intervals
                record = ray_t2t.train(cfg, method=label, seed=seed, log=lambda message: None)
                metric = record["final"]["test"][cfg.eval.metric]
                print(f"{label} seed {seed}: test {cfg.eval.metric} {metric:.3f}, {record['times']['train_s']:.1f} s")
        report = ray_t2t.report(cfg, plots=False)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
