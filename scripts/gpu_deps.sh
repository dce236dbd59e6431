#!/usr/bin/env bash
# Build .gpu-deps/: the pure-Python packages the GPU image lacks, for `run(carry=[".gpu-deps"])`.
#
#   bash scripts/gpu_deps.sh [--python-version 3.11]
#
# The device image has torch, torchvision, timm (hence huggingface_hub and safetensors), pandas, rich, filelock,
# scikit-learn and pytest, and no network. The latent-path bench also needs diffusers (the version installed here)
# and pytest-benchmark; diffusers imports requests. Each group's wheels go to their own folder, .gpu-deps/<module>/
# (wheels, not installed trees: diffusers unpacks to 62 MB and a device call carries 64 MiB in all), and
# scripts/gpu_check.sh installs a group offline (pip --no-index) and puts it on PYTHONPATH only when the image cannot
# import that module, so nothing the image has is shadowed. The wheels are py3-none-any, so they fit any CPython >=
# the --python-version given (default: this machine's). About 6 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
PYVER=$($PY -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
[ "${1:-}" = "--python-version" ] && PYVER=$2
DIFFUSERS=$($PY -c 'import diffusers; print(diffusers.__version__)')
rm -rf .gpu-deps.partial && mkdir -p .gpu-deps.partial
fetch() {  # fetch FOLDER PACKAGE...
  local dest=".gpu-deps.partial/$1"; shift
  $PY -m pip download -q --dest "$dest" --no-deps --only-binary=:all: --platform any --implementation py \
    --python-version "$PYVER" "$@"
}
fetch diffusers "diffusers==$DIFFUSERS"
fetch requests requests urllib3 certifi idna charset-normalizer
fetch pytest_benchmark pytest-benchmark py-cpuinfo
rm -rf .gpu-deps && mv .gpu-deps.partial .gpu-deps
du -sh .gpu-deps/* | sed 's/^/gpu_deps: /'
