"""A training worker's memory for its split: the memory-mapped views ray_t2t's Split gives (each
example read when used) against the split held as Python lists (what a worker held before), on a
synthetic split of token ids.

    .venv/bin/python benchmarks/split_memory.py [--examples 1000000] [--json out.json]

Writes one split file as ray_t2t.data does (Arrow IPC), then in a fresh process each: opens it, reads
every example once in a shuffled order (as an epoch of batches does), and reports the process's memory
after (resident, and its own anonymous part: the mapped file's pages are shared by a node's workers
and can be dropped by the kernel) and the seconds the reads took.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, random, sys, time
from pathlib import Path
import pyarrow as pa

def memory_mb():
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        fields[name] = int(value.split()[0])
    return fields["Rss"] / 1024, fields["Anonymous"] / 1024

from ray_t2t.data import IdLists  # both sides import it: only the split's memory is compared
path, mode = sys.argv[1], sys.argv[2]
before = memory_mb()
table = pa.ipc.open_file(pa.memory_map(path, "r")).read_all()
started = time.perf_counter()
if mode == "lists":
    sources = table.column("source_ids").to_pylist()
    targets = table.column("target_ids").to_pylist()
else:
    sources, targets = IdLists(table.column("source_ids")), IdLists(table.column("target_ids"))
load_s = time.perf_counter() - started
order = list(range(len(sources)))
random.Random(0).shuffle(order)
started = time.perf_counter()
tokens = 0
for i in order:
    tokens += len(sources[i]) + len(targets[i])
read_s = time.perf_counter() - started
after = memory_mb()
print(json.dumps({"rss_mb": after[0] - before[0], "anonymous_mb": after[1] - before[1], "load_s": load_s,
                  "read_s": read_s, "tokens": tokens}))
"""


def write_split(path: Path, examples: int) -> int:
    """A synthetic split: source 5-60 ids, target 3-30 ids per example. Returns its token count."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(0)
    columns = {}
    tokens = 0
    for name, (low, high) in (("source_ids", (5, 61)), ("target_ids", (3, 31))):
        lengths = rng.integers(low, high, examples)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        values = rng.integers(4, 70, int(offsets[-1])).astype(np.int32)
        columns[name] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
        tokens += int(offsets[-1])
    table = pa.table(columns)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return tokens


def measure(path: Path, mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), mode], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=1_000_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ray_t2t_split_memory_") as folder:
        path = Path(folder) / "train.arrow"
        tokens = write_split(path, args.examples)
        lists, views = measure(path, "lists"), measure(path, "views")  # the baseline first, then ray_t2t's
    result = {
        "examples": args.examples,
        "tokens": tokens,
        "file_mb": tokens * 4 / 2**20,
        "lists": lists,
        "views": views,
        "rss_ratio": views["rss_mb"] / lists["rss_mb"],
        "anonymous_ratio": views["anonymous_mb"] / lists["anonymous_mb"],
        "read_ratio": views["read_s"] / lists["read_s"],
    }
    print(
        f"{args.examples:,} examples, {tokens:,} tokens: worker memory {views['rss_mb']:,.0f} MB resident "
        f"({views['anonymous_mb']:,.0f} MB its own) with the views vs {lists['rss_mb']:,.0f} MB "
        f"({lists['anonymous_mb']:,.0f} MB) as lists: {result['rss_ratio']:.3f}x; an epoch of reads "
        f"{views['read_s']:.1f} s vs {lists['read_s']:.1f} s (+ {lists['load_s']:.1f} s to build the lists)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
