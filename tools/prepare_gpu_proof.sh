#!/usr/bin/env bash
# Prepares the GPU proof's bundle: what the GPU machine lacks, in one
# git-ignored folder of at most 64 MiB together with the checkout.
#
#   bash tools/prepare_gpu_proof.sh [CIFAR10_FOLDER]    # default ../shared/data/cifar10
#
# The machine (Python 3.12, PyTorch, JAX with CUDA, NumPy, SciPy, Pillow, h5py,
# rich, huggingface-hub; no Keras, no TensorFlow, no diffusers, no network)
# gets: pure-Python or cp312 wheels of Keras and what it and diffusers need
# there (gpu_bundle/wheels), and CIFAR-10 as JPEG bytes in one .npz
# (gpu_bundle/cifar10.npz: up to 4,000 training images per class, as many as
# the room left allows, and the whole
# test split, decoded on the machine). Then, on the machine, from the
# repository root (gpu_bundle carried along):
#
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site gpu_bundle/wheels/*.whl \
#     && PYTHONPATH=/tmp/site python3 tools/gpu_proof.py --out $OUT --minutes 8 \
#        --data gpu_bundle/cifar10.npz
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-../shared/data/cifar10}"
BUNDLE=gpu_bundle
rm -rf "$BUNDLE/wheels"
mkdir -p "$BUNDLE/wheels"
KERAS_VERSION="$(python -c 'import importlib.metadata as m; print(m.version("keras"))')"
# One version of each; --no-deps: the machine already has the rest (numpy,
# ml-dtypes, absl-py, h5py, rich, packaging, huggingface-hub, safetensors, ...).
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$BUNDLE/wheels" "keras==$KERAS_VERSION" namex optree diffusers importlib_metadata \
  2>&1 | grep -v "^WARNING: Location" || true
# What travels: the checkout (tracked and untracked, not ignored) and the bundle, in MiB.
travel_mib() {
  python - "$BUNDLE" <<'PY'
import os, subprocess, sys
tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], capture_output=True,
                         text=True, check=True).stdout.split()
checkout = sum(os.path.getsize(f) for f in tracked if os.path.isfile(f))
carried = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(sys.argv[1]) for f in fs)
print(f"{checkout / 2**20:.2f} {carried / 2**20:.2f}")
PY
}
# The data gets the room the checkout and the wheels leave (64 MiB in all,
# 0.5 MiB spare): up to 4,000 training images per class.
rm -f "$BUNDLE/cifar10.npz"
read -r CHECKOUT WHEELS <<<"$(travel_mib)"
ROOM="$(python -c "print(f'{64 - 0.5 - $CHECKOUT - $WHEELS:.2f}')")"
python tools/gpu_proof.py --pack "$DATA" --pack_out "$BUNDLE/cifar10.npz" --train_per_class 4000 \
  --pack_max_mib "$ROOM"
ls -l "$BUNDLE/wheels"
read -r CHECKOUT CARRIED <<<"$(travel_mib)"
python - "$CHECKOUT" "$CARRIED" "$BUNDLE" <<'PY'
import sys
checkout, carried, total = float(sys.argv[1]), float(sys.argv[2]), sum(map(float, sys.argv[1:3]))
print(f"bundle: checkout {checkout:.1f} MiB + {sys.argv[3]}/ {carried:.1f} MiB "
      f"= {total:.1f} MiB (limit 64 MiB)")
sys.exit(0 if total <= 64 else 1)
PY
