#!/usr/bin/env bash
# What `--features cuda` needs to build on a machine without a GPU, from the package registries:
# NVIDIA's CUDA 13.0 compiler, headers and runtime from PyPI into .cuda/ (git-ignored), and link
# stubs (empty libraries with the real sonames) for the CUDA libraries cudarc links by name:
# libcuda, cuBLAS, cuBLASLt, cuRAND, NVRTC. A binary built against the stubs loads the real
# libraries on a GPU machine (the driver's libcuda.so.1, and the nvidia-* wheels' cu13 libraries
# on LD_LIBRARY_PATH, see tools/gpu-check.sh). CUDA 13.0 matches the GPU machines' driver (580).
#
#   bash tools/cuda-toolchain.sh && source .cuda/env
#   cargo check -p xtask --features cuda
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=$root/.cuda
home=$dest/pip/nvidia/cu13
if [ ! -x "$home/bin/nvcc" ]; then
    python3 -m pip install -q --disable-pip-version-check --no-deps --target "$dest/pip" \
        nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 \
        nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
fi
ln -sf libcudart.so.13 "$home/lib/libcudart.so"
"$home/bin/nvcc" --version | tail -2

# The stubs export every function cudarc binds (names read from its sources), as no-ops: they
# satisfy the linker only.
(cd "$root" && cargo fetch -q)
cudarc=$(cargo metadata --format-version 1 --all-features --manifest-path "$root/Cargo.toml" 2>/dev/null \
    | python3 -c 'import json,sys,os; m=json.load(sys.stdin); print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"]=="cudarc"))')
mkdir -p "$dest/stubs"
for spec in cuda:libcuda.so.1:driver cublas:libcublas.so.13:cublas cublasLt:libcublasLt.so.13:cublaslt \
    curand:libcurand.so.10:curand nvrtc:libnvrtc.so.13:nvrtc; do
    IFS=: read -r name soname dir <<<"$spec"
    grep -ho '^pub unsafe fn [A-Za-z0-9_]*' "$cudarc/src/$dir/sys/mod.rs" | awk '{print "void " $4 "(void) {}"}' \
        | sort -u >"$dest/stubs/$name.c"
    gcc -shared -fPIC -Wl,-soname,"$soname" -o "$dest/stubs/lib$name.so" "$dest/stubs/$name.c"
done

cat >"$dest/env" <<ENV
export CUDA_HOME=$home NVCC=$home/bin/nvcc PATH=$home/bin:\$PATH
export CUDA_COMPUTE_CAP=\${CUDA_COMPUTE_CAP:-90}
export LIBRARY_PATH=$dest/stubs:$home/lib\${LIBRARY_PATH:+:\$LIBRARY_PATH}
ENV
echo "CUDA toolchain in $dest: source $dest/env"
