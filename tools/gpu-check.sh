#!/usr/bin/env bash
# Prepares the GPU check: builds `xtask` with `--features cuda` here (the GPU machine has no Rust
# toolchain; tools/cuda-toolchain.sh provides nvcc and link stubs), strips it into .gpu/ (git-
# ignored; gzipped to fit the device tool's carry), and prints the one command to run on the GPU
# machine, which has the CUDA 13 driver and the nvidia-* cu13 libraries of its PyTorch.
#
#   bash tools/gpu-check.sh            # here: build, then print the device command
#   (device) carry [".gpu"], command as printed: writes report.md to $OUT
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash tools/cuda-toolchain.sh >/dev/null
# shellcheck disable=SC1091
source .cuda/env
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/cuda} cargo build --release -p xtask --features cuda
# Stripped, the binary is about 83 MB (candle's PTX for every op); gzip brings it to about 20 MB,
# under the device tool's 64 MiB carry.
mkdir -p .gpu
strip -o .gpu/xtask "${CARGO_TARGET_DIR:-$root/target/cuda}/release/xtask"
gzip -9 -f .gpu/xtask
ls -l .gpu/xtask.gz
cat <<'CMD'
device command (carry [".gpu"], timeout_s 600):
gunzip -c .gpu/xtask.gz >/tmp/xtask && chmod +x /tmp/xtask && export LD_LIBRARY_PATH=$(python3 -c 'import nvidia,os;print(":".join(os.path.join(p,"cu13","lib") for p in nvidia.__path__))'):${LD_LIBRARY_PATH:-} && nvidia-smi -L && /tmp/xtask gpu-check --device cuda:0
CMD
