"""ray_t2t: measure what each way of training a text-to-text model costs to reach a quality target.

Command line: ``ray-t2t --help``. Python (docs/python_api.md):

    import ray_t2t

    cfg = ray_t2t.load_config("configs/quickstart.yaml", ["training.max_steps=200"])
    record = ray_t2t.train(cfg, method="scratch")
    report = ray_t2t.report(cfg)
    print(report.summary)
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["load_config", "train", "sweep", "run", "report", "__version__"]


def __getattr__(name: str) -> Any:
    # The API (ray_t2t.api) is imported on first use: `import ray_t2t.storage` stays light, and
    # the package's modules never import the layer above them through it.
    if name in __all__:
        from ray_t2t import api

        return getattr(api, name)
    raise AttributeError(f"module 'ray_t2t' has no attribute {name!r}")
