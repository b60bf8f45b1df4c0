//! Run records: `runs/<name>/<timestamp>/` with the resolved config, versions, git revision,
//! seed and device, a JSONL log, checkpoints, `report.json` + `report.md`, and SVG plots.

use crate::error::{Result, TrainError, file_err};
use crate::report::Report;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One run's folder, held by this process (its `run.lock` names our pid) until dropped.
///
/// A run that recorded nothing (no log line, checkpoint, report or other file) when it is
/// dropped, such as one whose command failed before training, removes its folder.
#[derive(Debug)]
pub struct Run {
    dir: PathBuf,
    log: std::fs::File,
    lock: RunLock,
    created: bool,
    /// Suppresses progress bars (CI, tests).
    pub quiet: bool,
}

/// The UTC time as `YYYYMMDD-HHMMSS`, the name of a run folder.
pub fn timestamp() -> String {
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
    /// [`config_key`] of `config.toml` (absent in runs written before it existed).
    #[serde(default)]
    pub config_key: Option<String>,
}

impl Run {
    /// Creates `root/<name>/<timestamp>/` exclusively (a run started in the same second gets a
    /// `-<k>` suffix, never the same folder) and writes `config.toml` and `meta.json`.
    pub fn create(root: &Path, name: &str, config: &impl Serialize, seed: u64, device: &str) -> Result<Self> {
        let cfg = toml::to_string_pretty(config).map_err(|e| file_err(&root.join(name), e))?;
        let key = config_key(config).map_err(|e| file_err(&root.join(name), e))?;
        let base = root.join(name);
        std::fs::create_dir_all(&base).map_err(|e| file_err(&base, e))?;
        let stamp = timestamp();
        let mut dir = base.join(&stamp);
        let mut k = 1;
        loop {
            match std::fs::create_dir(&dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && k < 10_000 => {
                    dir = base.join(format!("{stamp}-{k}"));
                    k += 1;
                }
                Err(e) => return Err(file_err(&dir, e)),
            }
        }
        let lock = RunLock::acquire(&dir)?;
        let mut run = Self::with_lock(dir, lock)?;
        run.created = true;
        write_atomic(&run.dir.join("config.toml"), cfg.as_bytes())?;
        let meta = Meta {
            name: name.into(),
            seed,
            device: device.into(),
            git: git_revision(),
            version: env!("CARGO_PKG_VERSION").into(),
            candle: "0.11".into(),
            threads: rayon_threads(),
            config_key: Some(key),
        };
        run.write_json("meta.json", &meta)?;
        Ok(run)
    }

    /// Reopens the newest run of `name` under `root`, taking its lock.
    pub fn newest(root: &Path, name: &str) -> Result<Option<Self>> {
        runs_of(root, name)?.pop().map(Self::open).transpose()
    }

    /// With `resume`, the newest run of `name` if there is one, after checking that it was
    /// configured exactly as `config` (else an error naming each differing field); otherwise a
    /// new run. The flag says whether an existing run was reopened.
    pub fn resume_or_create(
        root: &Path,
        name: &str,
        config: &impl Serialize,
        seed: u64,
        device: &str,
        resume: bool,
    ) -> Result<(Self, bool)> {
        if resume && let Some(dir) = runs_of(root, name)?.pop() {
            let differences = config_differences(&dir, config)?;
            if !differences.is_empty() {
                return Err(TrainError::Config(format!(
                    "--resume would continue {} under another configuration ({}); \
                     rerun with its configuration, or without --resume to start a new run",
                    dir.display(),
                    differences.join("; ")
                )));
            }
            return Ok((Self::open(dir)?, true));
        }
        Ok((Self::create(root, name, config, seed, device)?, false))
    }

    /// The file `artifact` of the newest run of `name` under `root` that was configured exactly
    /// as `config` and holds it: a cache lookup by configuration, never by date alone.
    pub fn cached(root: &Path, name: &str, config: &impl Serialize, artifact: &str) -> Result<Option<PathBuf>> {
        let key = config_key(config).map_err(|e| file_err(&root.join(name), e))?;
        for dir in runs_of(root, name)?.into_iter().rev() {
            let file = dir.join(artifact);
            if file.is_file() && stored_key(&dir).as_deref() == Some(key.as_str()) {
                return Ok(Some(file));
            }
        }
        Ok(None)
    }

    /// The run `root/<name>/<timestamp>/` of one arm of an experiment: with `resume`, the newest
    /// existing one (configured as `cfg`; see [`Run::resume_or_create`]) and whether it holds
    /// checkpoints to resume from, else a new one.
    pub fn for_arm(
        root: &Path,
        name: &str,
        cfg: &crate::engine::TrainConfig,
        resume: bool,
        quiet: bool,
        device: &str,
    ) -> Result<(Self, bool)> {
        let (mut run, reopened) = Self::resume_or_create(root, name, cfg, cfg.seed, device, resume)?;
        run.quiet = quiet;
        let resuming = reopened && run.checkpoints().is_dir();
        Ok((run, resuming))
    }

    fn open(dir: PathBuf) -> Result<Self> {
        let lock = RunLock::acquire(&dir)?;
        Self::with_lock(dir, lock)
    }

    fn with_lock(dir: PathBuf, lock: RunLock) -> Result<Self> {
        let p = dir.join("log.jsonl");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&p).map_err(|e| file_err(&p, e))?;
        Ok(Self { dir, log, lock, created: false, quiet: false })
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

impl Drop for Run {
    fn drop(&mut self) {
        self.lock.release();
        if self.created && recorded_nothing(&self.dir) {
            // Best effort: a folder that cannot be removed is only clutter.
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Whether a run folder holds nothing but what [`Run::create`] wrote.
fn recorded_nothing(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    entries.filter_map(|e| e.ok()).all(|e| {
        let name = e.file_name();
        match name.to_str() {
            Some("config.toml" | "meta.json" | LOCK) => true,
            Some("log.jsonl") => e.metadata().is_ok_and(|m| m.len() == 0),
            _ => false,
        }
    })
}

const LOCK: &str = "run.lock";

/// `run.lock` in a run folder, naming the process that writes the run.
#[derive(Debug)]
struct RunLock {
    path: PathBuf,
    held: bool,
}

impl RunLock {
    /// Takes the folder's lock, or fails naming the live process holding it. A lock left by a
    /// process that no longer exists (a killed run) is taken over.
    fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK);
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    write!(f, "{}", std::process::id()).map_err(|e| file_err(&path, e))?;
                    return Ok(Self { path, held: true });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path).ok().and_then(|t| t.trim().parse::<u32>().ok());
                    if let Some(pid) = holder.filter(|&p| process_alive(p)) {
                        return Err(file_err(
                            dir,
                            format!(
                                "this run is being written by process {pid}{} (its {LOCK}); \
                                 wait for it to end or stop it before resuming",
                                if pid == std::process::id() { " (this one)" } else { "" }
                            ),
                        ));
                    }
                    // The holder is gone (or the lock is unreadable): a stale lock.
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(file_err(&path, e)),
                    }
                }
                Err(e) => return Err(file_err(&path, e)),
            }
        }
        Err(file_err(&path, "another process took this run's lock at the same moment"))
    }

    fn release(&mut self) {
        if std::mem::take(&mut self.held) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether process `pid` exists (Linux: `/proc/<pid>`; elsewhere every holder counts as alive).
fn process_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") { Path::new(&format!("/proc/{pid}")).exists() } else { true }
}

/// The runs of `name` under `root` (folders with a `meta.json`), oldest first.
fn runs_of(root: &Path, name: &str) -> Result<Vec<PathBuf>> {
    let base = root.join(name);
    if !base.is_dir() {
        return Ok(Vec::new());
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&base)
        .map_err(|e| file_err(&base, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("meta.json").is_file())
        .collect();
    // `<stamp>` < `<stamp>-1` < `<stamp>-2` < ... < `<stamp>-10`.
    dirs.sort_by_key(|p| {
        let n = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let (stamp, k) = match n.get(15..).and_then(|r| r.strip_prefix('-')) {
            Some(k) => (n[..15].to_string(), k.parse::<u64>().unwrap_or(0)),
            None => (n.clone(), 0),
        };
        (stamp, k)
    });
    Ok(dirs)
}

/// A configuration as a TOML value.
fn config_value(config: &impl Serialize) -> std::result::Result<toml::Value, toml::ser::Error> {
    toml::Value::try_from(config)
}

/// Writes `v` with table keys in sorted order, so equal configurations give equal text.
fn canonical(v: &toml::Value, out: &mut String) {
    match v {
        toml::Value::Table(t) => {
            let mut keys: Vec<&String> = t.keys().collect();
            keys.sort();
            out.push('{');
            for k in keys {
                out.push_str(&format!("{k:?}="));
                canonical(&t[k.as_str()], out);
                out.push(',');
            }
            out.push('}');
        }
        toml::Value::Array(a) => {
            out.push('[');
            for x in a {
                canonical(x, out);
                out.push(',');
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The key of a configuration: the first 16 hex digits of the SHA-256 of its canonical TOML.
pub fn config_key(config: &impl Serialize) -> std::result::Result<String, toml::ser::Error> {
    Ok(key_of(&config_value(config)?))
}

fn key_of(v: &toml::Value) -> String {
    use sha2::Digest;
    let mut text = String::new();
    canonical(v, &mut text);
    sha2::Sha256::digest(text.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The key of the configuration a run folder was created with (from its `config.toml`).
fn stored_key(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("config.toml")).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    Some(key_of(&toml::Value::Table(table)))
}

/// `field: stored -> requested` for every field where run folder `dir`'s `config.toml` and
/// `config` differ (dotted paths; empty when they agree).
fn config_differences(dir: &Path, config: &impl Serialize) -> Result<Vec<String>> {
    let path = dir.join("config.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| file_err(&path, e))?;
    let stored: toml::Table = toml::from_str(&text).map_err(|e| file_err(&path, e))?;
    let requested = config_value(config).map_err(|e| file_err(&path, e))?;
    let mut out = Vec::new();
    diff("", Some(&toml::Value::Table(stored)), Some(&requested), &mut out);
    Ok(out)
}

fn diff(at: &str, a: Option<&toml::Value>, b: Option<&toml::Value>, out: &mut Vec<String>) {
    let show = |v: Option<&toml::Value>| v.map(|v| v.to_string()).unwrap_or_else(|| "(absent)".into());
    match (a, b) {
        (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let path = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
                diff(&path, x.get(k.as_str()), y.get(k.as_str()), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{at}: {} -> {}", show(a), show(b))),
    }
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(std::env::var("RAYON_NUM_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(usize::MAX))
}

/// Writes a file through a temporary name of this process's own and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    compress_core::atomic::write(path, bytes).map_err(|e| file_err(path, e))
}

/// The newest `report.json` of every run name under `root`.
#[derive(Debug, Default)]
pub struct Reports {
    /// Readable reports, by path.
    pub found: Vec<(PathBuf, Report)>,
    /// Reports that could not be read or parsed, with the reason.
    pub skipped: Vec<(PathBuf, TrainError)>,
}

/// The newest `report.json` of every run name under `root` (`root/<name...>/<timestamp>/`); an
/// unreadable one is skipped and named, not fatal.
pub fn newest_reports(root: &Path) -> Reports {
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
    let mut out = Reports::default();
    for p in found.into_values() {
        let read = std::fs::read_to_string(&p)
            .map_err(|e| file_err(&p, e))
            .and_then(|text| serde_json::from_str::<Report>(&text).map_err(|e| file_err(&p, e)));
        match read {
            Ok(r) => out.found.push((p, r)),
            Err(e) => out.skipped.push((p, e)),
        }
    }
    out
}
