//! `cargo xtask gpu-check`: on a machine with a GPU, one report of what the CUDA path does:
//! every owned kernel against the CPU (`compress_core::gpu::check`), the CUDA 1xN bench against
//! cuBLAS / cuDNN dense (`onexn::bench::device_layers`), and every method's smoke reproduction
//! on the device (`reproduce all --profile smoke --device ...`, in child processes). Written to
//! `runs/gpu-check/<time>/report.md` and, where `$OUT` is set (the device tool), `$OUT/report.md`.
//! Fails if a check or a reproduction failed.

use anyhow::{Result, bail};
use std::fmt::Write as _;
use std::path::PathBuf;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// `cuda:0` (or `cpu`, to check the command itself).
    pub device: String,
    /// Least seconds per bench timing.
    pub seconds: f64,
    /// Leave out the smoke reproductions.
    pub no_smoke: bool,
    /// The bench's layers (of ten) and batches.
    pub layers: usize,
    /// Batches of the bench.
    pub batches: Vec<usize>,
    /// Where `gpu-check/<time>/report.md` goes (`runs`).
    pub root: PathBuf,
}

/// Runs the check and writes its report; returns the report's path.
pub fn run(o: &Options) -> Result<PathBuf> {
    let start = std::time::Instant::now();
    let device = crate::device::parse(&o.device)?;
    let dir = o.root.join("gpu-check").join(compress_train::record::timestamp());
    std::fs::create_dir_all(&dir)?;
    // Written after every section, so a run stopped at its time limit keeps what it measured.
    let save = |report: &str| -> Result<()> {
        compress_train::record::write_atomic(&dir.join("report.md"), report.as_bytes())?;
        if let Some(out) = out_dir(std::env::var_os("OUT")) {
            compress_train::record::write_atomic(&out.join("report.md"), report.as_bytes())?;
        }
        Ok(())
    };
    let mut report = format!("# GPU check on {}\n\n", o.device);
    let _ = writeln!(report, "Command: `cargo xtask gpu-check --device {}`; device {device:?}.\n", o.device);

    let checks = compress_core::gpu::check::against_cpu(&device)?;
    let failed: Vec<&str> = checks.iter().filter(|c| !c.passed()).map(|c| c.name.as_str()).collect();
    let _ = writeln!(report, "## Kernels against the CPU ({} of {} pass)\n", checks.len() - failed.len(), checks.len());
    report += "| kernel | relative error | bound | verdict |\n| --- | --- | --- | --- |\n";
    for c in &checks {
        let verdict = if c.passed() { "ok" } else { "FAILS" };
        let _ = writeln!(report, "| {} | {:.2e} | {:.0e} | {verdict} |", c.name, c.error, c.bound);
    }
    save(&report)?;

    report += "\n## The 1xN kernel against dense\n\n";
    let mut table = Vec::new();
    onexn::bench::device_layers(&mut table, &device, o.seconds, o.layers, &o.batches)?;
    report += &String::from_utf8_lossy(&table);
    save(&report)?;

    let mut smoke_ok = true;
    if !o.no_smoke {
        report += "\n## Every method's smoke reproduction on the device\n\n";
        let t0 = std::time::Instant::now();
        // Streamed to files (beside `$OUT/report.md` where set), so a run stopped at its time
        // limit still shows which reproductions finished.
        let logs = out_dir(std::env::var_os("OUT")).unwrap_or_else(|| dir.clone());
        let (out_path, err_path) = (logs.join("smoke.log"), logs.join("smoke.err"));
        let status = std::process::Command::new(std::env::current_exe()?)
            .args(["reproduce", "all", "--profile", "smoke", "--device", &o.device, "--quiet"])
            .stdout(std::fs::File::create(&out_path)?)
            .stderr(std::fs::File::create(&err_path)?)
            .status()?;
        smoke_ok = status.success();
        let stdout = std::fs::read_to_string(&out_path)?;
        // The summary table `reproduce all` ends with.
        let table: Vec<&str> = stdout.lines().skip_while(|l| !l.starts_with("| method |")).collect();
        report += &table.join("\n");
        let _ = writeln!(report, "\n\n{:.1} minutes; exit {status}", t0.elapsed().as_secs_f64() / 60.0);
        if !smoke_ok {
            let err = std::fs::read_to_string(&err_path)?;
            let tail: Vec<&str> = err.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
            let _ = writeln!(report, "\n```\n{}\n```", tail.join("\n"));
        }
    }
    let _ = writeln!(report, "\nwall time {:.0} s", start.elapsed().as_secs_f64());
    save(&report)?;
    println!("{report}\nreport: {}", dir.join("report.md").display());
    if !failed.is_empty() {
        bail!("{} kernel check(s) failed: {}", failed.len(), failed.join(", "));
    }
    if !smoke_ok {
        bail!("a smoke reproduction failed on {}", o.device);
    }
    Ok(dir.join("report.md"))
}

/// The folder named by the device tool's `OUT`, if set and not empty (an empty value would
/// otherwise name the working directory).
fn out_dir(out: Option<std::ffi::OsString>) -> Option<PathBuf> {
    out.filter(|v| !v.is_empty()).map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_out_names_no_folder() {
        assert_eq!(out_dir(None), None);
        assert_eq!(out_dir(Some("".into())), None);
        assert_eq!(out_dir(Some("/tmp/out".into())), Some(PathBuf::from("/tmp/out")));
    }

    #[test]
    fn the_check_runs_on_the_cpu_and_writes_one_report() {
        let root = tempfile::tempdir().expect("tmp");
        let o = Options {
            device: "cpu".into(),
            seconds: 0.0,
            no_smoke: true,
            layers: 1,
            batches: vec![1],
            root: root.path().to_path_buf(),
        };
        let path = run(&o).expect("the CPU agrees with itself");
        let report = std::fs::read_to_string(path).expect("report");
        assert!(report.contains("## Kernels against the CPU (138 of 138 pass)"), "{report}");
        assert_eq!(report.matches("| R50 64->256 @56 | 1 |").count(), 6, "{report}");
        assert!(!report.contains("FAILS"));
        let bad = Options { device: "tpu:0".into(), ..o };
        assert!(run(&bad).is_err());
    }
}
