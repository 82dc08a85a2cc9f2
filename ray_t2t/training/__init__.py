"""The shared training loop (loop.py, one per worker) and its launcher on Ray Train (launcher.py).

from ray_t2t.training.launcher import train
record = train(cfg, "scratch")
"""
