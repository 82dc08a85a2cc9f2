"""The shared training loop (loop.py, one per worker) and its launcher on Ray Train (launcher.py).

from ray_t2t.train.launcher import train
record = train(cfg, "scratch")
"""
