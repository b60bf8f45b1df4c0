//! Under the `cuda` feature, compiles the CUDA sources in the workspace's `kernels/` to PTX in
//! `OUT_DIR` (embedded by `compress_core::gpu`). nvcc is `$NVCC`, else `$CUDA_HOME/bin/nvcc`,
//! else `nvcc` on the PATH (`tools/cuda-toolchain.sh` installs one from PyPI); the PTX targets
//! `compute_$CUDA_COMPUTE_CAP` (default 80: the driver compiles it for any newer GPU at load).
//! Without the feature nothing runs.

use std::path::PathBuf;
use std::process::Command;

const KERNELS: [&str; 2] = ["onexn", "fake_quant"];

fn main() {
    println!("cargo::rerun-if-env-changed=NVCC");
    println!("cargo::rerun-if-env-changed=CUDA_HOME");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let sources = manifest.join("../../kernels");
    let nvcc = std::env::var_os("NVCC").map(PathBuf::from).unwrap_or_else(|| match std::env::var_os("CUDA_HOME") {
        Some(home) => PathBuf::from(home).join("bin/nvcc"),
        None => PathBuf::from("nvcc"),
    });
    let cap: String = std::env::var("CUDA_COMPUTE_CAP")
        .unwrap_or_else(|_| "80".into())
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    for name in KERNELS {
        let src = sources.join(format!("{name}.cu"));
        println!("cargo::rerun-if-changed={}", src.display());
        let ptx = out.join(format!("{name}.ptx"));
        let status = Command::new(&nvcc)
            .args(["--ptx", "-O3", "-std=c++17", &format!("-arch=compute_{cap}"), "-o"])
            .arg(&ptx)
            .arg(&src)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("{} failed on {} ({s})", nvcc.display(), src.display()),
            Err(e) => panic!(
                "cannot run {} ({e}): install the CUDA compiler (bash tools/cuda-toolchain.sh) and set NVCC or CUDA_HOME",
                nvcc.display()
            ),
        }
    }
}
