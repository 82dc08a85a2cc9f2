"""An example ray_t2t plug-in package: the method smooth_ce, the task reverse_words and the metric
char_accuracy, registered through entry points (pyproject.toml)."""
