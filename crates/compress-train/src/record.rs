//! Run records: `runs/<name>/<timestamp>/` with the resolved config, versions, git revision,
//! seed and device, a JSONL log, checkpoints, `report.json` + `report.md`, and SVG plots.

use crate::error::{Result, file_err};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One run's folder.
#[derive(Debug)]
pub struct Run {
    dir: PathBuf,
    log: std::fs::File,
    /// Suppresses progress bars (CI, tests).
    pub quiet: bool,
}

fn timestamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    // UTC calendar from the Unix time (civil-from-days, H. Hinnant).
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn git_revision() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// What a run records about itself in `meta.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// Run name (`dcff/mini`, `train/resnet20-mnist-5k`).
    pub name: String,
    /// Seed.
    pub seed: u64,
    /// Device description.
    pub device: String,
    /// Git revision of the source tree.
    pub git: String,
    /// Toolkit version.
    pub version: String,
    /// candle version.
    pub candle: String,
    /// Threads of the rayon pool.
    pub threads: usize,
}

impl Run {
    /// Creates `root/<name>/<timestamp>/` and writes `config.toml` and `meta.json`.
    pub fn create(root: &Path, name: &str, config: &impl Serialize, seed: u64, device: &str) -> Result<Self> {
        let base = root.join(name);
        let mut dir = base.join(timestamp());
        let mut k = 1;
        while dir.exists() {
            dir = base.join(format!("{}-{k}", timestamp()));
            k += 1;
        }
        std::fs::create_dir_all(&dir).map_err(|e| file_err(&dir, e))?;
        let cfg = toml::to_string_pretty(config).map_err(|e| file_err(&dir, e))?;
        write_atomic(&dir.join("config.toml"), cfg.as_bytes())?;
        let meta = Meta {
            name: name.into(),
            seed,
            device: device.into(),
            git: git_revision(),
            version: env!("CARGO_PKG_VERSION").into(),
            candle: "0.11".into(),
            threads: rayon_threads(),
        };
        write_atomic(&dir.join("meta.json"), &serde_json::to_vec_pretty(&meta).map_err(|e| file_err(&dir, e))?)?;
        Self::open(dir)
    }

    /// Reopens the newest run of `name` under `root` (for `--resume`).
    pub fn newest(root: &Path, name: &str) -> Result<Option<Self>> {
        let base = root.join(name);
        if !base.is_dir() {
            return Ok(None);
        }
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&base)
            .map_err(|e| file_err(&base, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("meta.json").is_file())
            .collect();
        dirs.sort();
        dirs.pop().map(Self::open).transpose()
    }

    /// The run `root/<name>/<timestamp>/` of one arm of an experiment: with `resume`, the newest
    /// existing one (and whether it holds checkpoints to resume from), else a new one.
    pub fn for_arm(
        root: &Path,
        name: &str,
        cfg: &crate::engine::TrainConfig,
        resume: bool,
        quiet: bool,
        device: &str,
    ) -> Result<(Self, bool)> {
        let mut run = match (resume, Self::newest(root, name)?) {
            (true, Some(r)) => r,
            _ => Self::create(root, name, cfg, cfg.seed, device)?,
        };
        run.quiet = quiet;
        let resuming = resume && run.checkpoints().is_dir();
        Ok((run, resuming))
    }

    fn open(dir: PathBuf) -> Result<Self> {
        let p = dir.join("log.jsonl");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&p).map_err(|e| file_err(&p, e))?;
        Ok(Self { dir, log, quiet: false })
    }

    /// The run's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The checkpoint folder.
    pub fn checkpoints(&self) -> PathBuf {
        self.dir.join("checkpoints")
    }

    /// Appends one JSON object to `log.jsonl`.
    pub fn log(&mut self, v: &serde_json::Value) -> Result<()> {
        let p = self.dir.join("log.jsonl");
        writeln!(self.log, "{v}").map_err(|e| file_err(&p, e))
    }

    /// Writes `report.json` and `report.md`.
    pub fn write_report(&self, r: &Report) -> Result<()> {
        self.write_report_with(r, 2, "")
    }

    /// Writes `report.json` and `report.md` with `decimals` digits and `extra` Markdown after
    /// the table.
    pub fn write_report_with(&self, r: &Report, decimals: usize, extra: &str) -> Result<()> {
        write_atomic(
            &self.dir.join("report.json"),
            &serde_json::to_vec_pretty(r).map_err(|e| file_err(&self.dir, e))?,
        )?;
        write_atomic(&self.dir.join("report.md"), format!("{}{extra}", r.markdown_with(decimals)).as_bytes())
    }

    /// Writes an SVG line plot `<file>` of named series of `(x, y)` points.
    pub fn plot(&self, file: &str, title: &str, x_label: &str, series: &[(&str, Vec<(f64, f64)>)]) -> Result<PathBuf> {
        let path = self.dir.join(file);
        crate::plot::line_plot(&path, title, x_label, series)?;
        Ok(path)
    }
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(usize::MAX))
}

/// Writes a file through a temporary name and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(|e| file_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| file_err(path, e))
}

/// Whether a claim held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// The measured result supports the claim.
    Holds,
    /// It does not.
    Fails,
    /// Nothing to judge (a baseline row).
    Info,
}

/// One row of a report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportRow {
    /// What was measured (`top-1 (%)`, `PSNR-Y x2 (dB)`).
    pub setting: String,
    /// The baseline's figure.
    pub baseline: Option<f64>,
    /// Our method's figure.
    pub method: Option<f64>,
    /// The paper's figure, where one exists.
    pub paper: Option<f64>,
    /// The claim this row tests, in words.
    pub claim: String,
    /// Whether it held.
    pub verdict: Verdict,
}

impl ReportRow {
    /// `method - baseline` where there is a baseline, else `method - paper` (marked so).
    pub fn delta(&self) -> String {
        self.delta_with(2)
    }

    /// [`ReportRow::delta`] with `decimals` digits.
    pub fn delta_with(&self, decimals: usize) -> String {
        match (self.method, self.baseline, self.paper) {
            (Some(m), Some(b), _) => format!("{:+.decimals$}", m - b),
            (Some(m), None, Some(p)) => format!("{:+.decimals$} vs paper", m - p),
            _ => "-".into(),
        }
    }
}

/// A run's report: a title, rows, the command that produced it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Title (`ResNet-20 on mnist-5k, dense baseline`).
    pub title: String,
    /// The command that reproduces it.
    pub command: String,
    /// The rows.
    pub rows: Vec<ReportRow>,
}

impl Report {
    /// The report as a Markdown table.
    pub fn markdown(&self) -> String {
        self.markdown_with(2)
    }

    /// [`Report::markdown`] with `decimals` digits (PSNR margins of hundredths of a dB need 3).
    pub fn markdown_with(&self, decimals: usize) -> String {
        let f = |v: Option<f64>| v.map(|x| format!("{x:.decimals$}")).unwrap_or_else(|| "-".into());
        let mut s = format!("# {}\n\nCommand: `{}`\n\n", self.title, self.command);
        s += "| setting | baseline | method | paper | delta | claim | verdict |\n| --- | --- | --- | --- | --- | --- | --- |\n";
        for r in &self.rows {
            let delta = r.delta_with(decimals);
            s += &format!(
                "| {} | {} | {} | {} | {} | {} | {:?} |\n",
                r.setting,
                f(r.baseline),
                f(r.method),
                f(r.paper),
                delta,
                r.claim,
                r.verdict
            );
        }
        s
    }
}

/// The newest `report.json` of every run name under `root` (`root/<name...>/<timestamp>/`).
pub fn newest_reports(root: &Path) -> Result<Vec<(PathBuf, Report)>> {
    let mut found: std::collections::BTreeMap<PathBuf, PathBuf> = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "report.json")
                && let Some(run) = p.parent()
                && let Some(name) = run.parent()
            {
                let newer = found.get(name).is_none_or(|old| old < &p);
                if newer {
                    found.insert(name.to_path_buf(), p.clone());
                }
            }
        }
    }
    let mut out = Vec::new();
    for p in found.into_values() {
        let text = std::fs::read_to_string(&p).map_err(|e| file_err(&p, e))?;
        let r: Report = serde_json::from_str(&text).map_err(|e| file_err(&p, e))?;
        out.push((p, r));
    }
    Ok(out)
}
