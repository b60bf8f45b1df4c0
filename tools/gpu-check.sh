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
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/cuda}
cargo build --release -p xtask --features cuda
# The device-parameterised tests (compress-core's kernels and ops, the zoo's half precision) as
# binaries: on the GPU machine they compare cuda:0 against the CPU.
tests=$(cargo test --release --no-run -p compress-core --lib -p compress-nn --test zoo_cnn --features compress-nn/cuda \
    --message-format=json | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["name"] in ("compress_core", "zoo_cnn"):
        print(m["target"]["name"]+"="+m["executable"])')
# Stripped, xtask is about 83 MB (candle's PTX for every op) and each test binary about 55 MB;
# gzipped, 20 + 2 x 13 MB, which with the working tree stays under the device tool's 64 MiB.
rm -rf .gpu && mkdir -p .gpu
strip -o .gpu/xtask "$CARGO_TARGET_DIR/release/xtask"
for t in $tests; do strip -o ".gpu/test-${t%%=*}" "${t#*=}"; done
gzip -9 -f .gpu/*
ls -l .gpu
cat <<'CMD'
device command (carry [".gpu"], timeout_s 600):
set -o pipefail; for f in .gpu/*.gz; do gunzip -c $f >/tmp/$(basename $f .gz); chmod +x /tmp/$(basename $f .gz); done; export LD_LIBRARY_PATH=$(python3 -c 'import nvidia,os;print(":".join(os.path.join(p,"cu13","lib") for p in nvidia.__path__))'):/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}; nvidia-smi -L; (cd crates/compress-core && /tmp/test-compress_core) >$OUT/tests-core.log 2>&1; tail -3 $OUT/tests-core.log; (cd crates/compress-nn && /tmp/test-zoo_cnn) >$OUT/tests-zoo.log 2>&1; tail -3 $OUT/tests-zoo.log; /tmp/xtask gpu-check --device cuda:0
CMD
