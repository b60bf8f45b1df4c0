//! Run records: `runs/<name>/<timestamp>/` with the resolved config, versions, git revision,
//! seed and device, a JSONL log, checkpoints, `report.json` + `report.md`, and SVG plots.

use crate::error::{Result, file_err};
use crate::report::Report;
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

    /// Appends one JSON object (any serializable value) to `log.jsonl`.
    pub fn log(&mut self, v: &impl Serialize) -> Result<()> {
        let p = self.dir.join("log.jsonl");
        let line = serde_json::to_string(v).map_err(|e| file_err(&p, e))?;
        writeln!(self.log, "{line}").map_err(|e| file_err(&p, e))
    }

    /// Writes `report.json` and `report.md` (the table at the report's decimals, then its notes).
    pub fn write_report(&self, r: &Report) -> Result<()> {
        write_atomic(
            &self.dir.join("report.json"),
            &serde_json::to_vec_pretty(r).map_err(|e| file_err(&self.dir, e))?,
        )?;
        write_atomic(&self.dir.join("report.md"), r.markdown().as_bytes())
    }

    /// Writes `value` as pretty JSON to `<file>` in the run folder, atomically.
    pub fn write_json(&self, file: &str, value: &impl Serialize) -> Result<PathBuf> {
        let path = self.dir.join(file);
        write_atomic(&path, &serde_json::to_vec_pretty(value).map_err(|e| file_err(&path, e))?)?;
        Ok(path)
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
