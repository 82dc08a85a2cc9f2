"""reverse_words: spell a word backwards, letter by letter ("cat" -> "t a c"). In a config:
`data: {task: reverse_words, options: {words: 3000, seed: 0}}`."""

from __future__ import annotations

import random
import string

from ray_t2t.config.sections import DataSection
from ray_t2t.data import Example


def load(data: DataSection) -> dict[str, list[Example]]:
    """Random lowercase words; only a train split: ray_t2t carves validation and test from it
    (data.split_sizes)."""
    count, seed = int(data.options.get("words", 3000)), int(data.options.get("seed", 0))
    rng = random.Random(seed)
    words = sorted({"".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 8))) for _ in range(count)})
    examples = []
    for i, word in enumerate(words):
        target = " ".join(reversed(word))
        examples.append(Example(word, target, (target,), f"reverse_words word {i}"))
    return {"train": examples}
