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
# The symbol table stays (1 MB gzipped), so a failure on the GPU machine names its functions.
strip --strip-debug -o .gpu/xtask "$CARGO_TARGET_DIR/release/xtask"
for t in $tests; do strip -o ".gpu/test-${t%%=*}" "${t#*=}"; done
gzip -9 -f .gpu/*
ls -l .gpu
# On the GPU machine: the CUDA 13 libraries of its PyTorch (every nvidia/*/lib), each stage under
# its own time limit so that a slow stage leaves the next one its turn, the logs under $OUT.
cat <<'CMD'
device command (carry [".gpu"], timeout_s 480):
set -o pipefail; for f in .gpu/*.gz; do b=/tmp/$(basename $f .gz); gunzip -c $f >$b; chmod +x $b; done; export LD_LIBRARY_PATH=$(python3 -c 'import nvidia,glob;print(":".join(d for p in nvidia.__path__ for d in sorted(glob.glob(p+"/*/lib"))))'):/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-} COMPRESS_REQUIRE_CUDA=1; nvidia-smi -L; ldd /tmp/xtask | grep -E 'not found|cu|nvrtc'; (cd crates/compress-core && timeout 120 /tmp/test-compress_core) >$OUT/tests-core.log 2>&1; tail -3 $OUT/tests-core.log; (cd crates/compress-nn && timeout 60 /tmp/test-zoo_cnn) >$OUT/tests-zoo.log 2>&1; tail -3 $OUT/tests-zoo.log; timeout 270 /tmp/xtask gpu-check --device cuda:0
CMD
