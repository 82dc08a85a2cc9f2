"""The experiment config, in layers:

    sections.py    every YAML section as a strict pydantic model (below the methods, which build on
                   MethodParams)
    overrides.py   ``a.b=value`` overrides and unknown-key messages on raw dicts
    experiment.py  ExperimentConfig (the sections plus the registered methods' entries), load_config,
                   validate_config, config_hash
    explain.py     ``ray-t2t validate --explain``

This package imports nothing itself, so a method can build on config.sections while
config.experiment builds on the methods.
"""
