"""ray_t2t: measure what each way of training a text-to-text model costs to reach a quality target.

Command line: ``ray-t2t --help``. Library entry points:

    from ray_t2t.config.experiment import load_config
    from ray_t2t.data import prepare_data

    cfg = load_config("configs/quickstart.yaml", ["data.split_sizes.train=2000"])
    prepared = prepare_data(cfg)
"""

__version__ = "0.1.0"
