#!/usr/bin/env bash
# Wheels for running `python -m benchmarks.accelerator` on a machine with no network whose Python
# already has jax, flax, optax, orbax-checkpoint, chex and torch (for example the lent H200:
# Python 3.12). Downloads, for that Python and manylinux x86-64, the project's other imports and
# those of their needs that such an image lacks, into DIR (default .whl):
#
#   bash benchmarks/wheelhouse.sh [DIR] [PYTHON_VERSION]      # here, where pip reaches PyPI
#   # there, in the repository root, with DIR carried along:
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site DIR/*.whl \
#     && PYTHONPATH=/tmp/site python3 -m benchmarks.accelerator
#
# Versions are this project's pins (pyproject.toml) where it pins them.
set -euo pipefail
dir="${1:-.whl}"
py="${2:-3.12}"
wheels=(
  "grain==0.2.18" "array-record==0.8.6" "tensorflow-datasets==4.9.10" "ml-collections==1.1.0"
  "mnist1d==0.0.2.post1" "tensorboardX==2.6.5" "importlib-resources==6.5.2"
  # what grain and tensorflow-datasets need beyond such an image
  "portpicker==1.6.0" "dm-tree==0.1.9" "immutabledict==4.2.2"
  "simple-parsing==0.1.7" "docstring-parser==0.17.0" "tensorflow-metadata==1.17.3"
  "googleapis-common-protos==1.72.0" "termcolor==3.3.0" "toml==0.10.2"
)
# published as source only, and pure Python: built into wheels here
pure_sources=("promise==2.3")
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 \
         manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
mkdir -p "$dir"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" \
  --implementation cp "${platforms[@]}" -d "$dir" "${wheels[@]}"
python3 -m pip wheel -q --no-deps -w "$dir" "${pure_sources[@]}"
ls -1 "$dir"
