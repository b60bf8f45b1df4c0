//! [`RunContext`]: where a reproduction writes, what it resumes, on which device, seeds and
//! threads.

use crate::engine::TrainConfig;
use crate::error::{Result, TrainError};
use crate::record::Run;
use crate::report::Report;
use candle_core::{Device, DeviceLocation};
use serde::Serialize;
use std::path::PathBuf;

/// The settings every reproduction honours, bound to one method and profile by
/// [`super::reproduce`].
#[derive(Debug, Clone)]
pub struct RunContext {
    root: PathBuf,
    resume: bool,
    quiet: bool,
    device: Device,
    seeds: Option<Vec<u64>>,
    threads: usize,
    method: &'static str,
    profile: &'static str,
}

/// `cpu`, `cuda:N` or `metal:N`: how a run records its device.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        DeviceLocation::Cpu => "cpu".into(),
        DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

impl RunContext {
    /// Runs under `root` (`runs/`) on `device`: no resume, progress bars on, the profile's
    /// seeds, every core.
    pub fn new(root: impl Into<PathBuf>, device: Device) -> Self {
        Self {
            root: root.into(),
            resume: false,
            quiet: false,
            device,
            seeds: None,
            threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            method: "",
            profile: "",
        }
    }

    /// Continue the newest runs instead of starting new ones.
    pub fn resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// No progress bars or per-run lines.
    pub fn quiet(mut self, quiet: bool) -> Self {
        self.quiet = quiet;
        self
    }

    /// Run these seeds instead of the profile's (`--seeds 3,4,5`).
    pub fn seeds(mut self, seeds: Option<Vec<u64>>) -> Self {
        self.seeds = seeds.filter(|s| !s.is_empty());
        self
    }

    /// Use `threads` cores (`--threads N`; default every core).
    pub fn threads(mut self, threads: Option<usize>) -> Self {
        if let Some(t) = threads {
            self.threads = t.max(1);
        }
        self
    }

    /// This context for `method`'s `profile` ([`super::reproduce`] binds it; a lower-level
    /// entry point, such as one paper row, takes a bound context).
    pub fn bound(&self, method: &'static str, profile: &'static str) -> Self {
        Self { method, profile, ..self.clone() }
    }

    /// The folder runs go under: `root`, or `root/smoke` for the smoke profile (so a smoke run
    /// is never found as a cached result of a real one).
    pub fn root(&self) -> PathBuf {
        if self.profile == "smoke" { self.root.join("smoke") } else { self.root.clone() }
    }

    /// Whether to resume.
    pub fn resuming(&self) -> bool {
        self.resume
    }

    /// Whether to stay quiet.
    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The device as runs record it (`cpu`, `cuda:0`).
    pub fn device_name(&self) -> String {
        device_name(&self.device)
    }

    /// Cores this reproduction may use.
    pub fn thread_count(&self) -> usize {
        self.threads
    }

    /// The method's name.
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// The profile's name.
    pub fn profile(&self) -> &'static str {
        self.profile
    }

    /// The seeds to run: `--seeds` if given, else the profile's `default`.
    pub fn seeds_or(&self, default: &[u64]) -> Vec<u64> {
        self.seeds.clone().unwrap_or_else(|| default.to_vec())
    }

    /// The run name `<method>/<profile>[/<sub>]` (empty parts left out).
    pub fn name(&self, sub: &str) -> String {
        [self.method, self.profile, sub].into_iter().filter(|p| !p.is_empty()).collect::<Vec<_>>().join("/")
    }

    /// The command line that reproduces this run.
    pub fn command(&self) -> String {
        let mut c = format!("cargo xtask reproduce {}", self.method);
        if self.profile != "mini" {
            c += &format!(" --profile {}", self.profile);
        }
        if let Some(s) = &self.seeds {
            c += &format!(" --seeds {}", s.iter().map(u64::to_string).collect::<Vec<_>>().join(","));
        }
        c
    }

    /// An empty report stamped with this run's command, profile and `seeds`.
    pub fn report(&self, title: impl Into<String>, seeds: &[u64]) -> Report {
        Report::new(title, self.command(), self.profile, seeds)
    }

    /// The run `<method>/<profile>[/<sub>]`: with resume, the newest existing one (which must
    /// have been configured as `config`); else a new one recording `config`, `seed` and the
    /// device.
    pub fn run(&self, sub: &str, config: &impl Serialize, seed: u64) -> Result<Run> {
        let (mut run, _) =
            Run::resume_or_create(&self.root(), &self.name(sub), config, seed, &self.device_name(), self.resume)?;
        run.quiet = self.quiet;
        Ok(run)
    }

    /// A result recorded once per configuration: the `artifact` (JSON) of the newest run
    /// `<method>/<profile>/<sub>` configured exactly as `config`, or else `compute()`'s, recorded
    /// in a new such run. Returns the value, the run folder it lives in, and whether it was
    /// reused (the key is `config` and the device). What a mini's rate choice uses, so a second seed set reuses the choice the first
    /// one made on the same validation split with the same settings (the choice never depends on
    /// the reported seeds); `config` must hold everything the result depends on.
    pub fn memo<T, E, C>(
        &self,
        sub: &str,
        config: &C,
        artifact: &str,
        compute: impl FnOnce() -> std::result::Result<T, E>,
    ) -> std::result::Result<(T, PathBuf, bool), E>
    where
        T: Serialize + serde::de::DeserializeOwned,
        C: Serialize,
        E: From<TrainError>,
    {
        /// The device is part of every memo's key.
        #[derive(Serialize)]
        struct Keyed<'a, C> {
            device: String,
            config: &'a C,
        }
        let config = &Keyed { device: self.device_name(), config };
        if let Some(path) = Run::cached(&self.root(), &self.name(sub), config, artifact)? {
            let text = std::fs::read_to_string(&path).map_err(|e| crate::error::file_err(&path, e))?;
            let value = serde_json::from_str(&text).map_err(|e| crate::error::file_err(&path, e))?;
            let dir = path.parent().map(PathBuf::from).unwrap_or_default();
            return Ok((value, dir, true));
        }
        let value = compute()?;
        let run = Run::resume_or_create(&self.root(), &self.name(sub), config, 0, &self.device_name(), false)?.0;
        run.write_json(artifact, &value)?;
        Ok((value, run.dir().to_path_buf(), false))
    }

    /// The training run of one arm, `<method>/<profile>/<arm>`, and whether it resumes from
    /// checkpoints ([`Run::for_arm`]).
    pub fn arm(&self, arm: &str, config: &TrainConfig) -> Result<(Run, bool)> {
        Run::for_arm(&self.root(), &self.name(arm), config, self.resume, self.quiet, &self.device_name())
    }

    /// Runs `f(job, ctx)` for every job, up to `wanted` side by side when the device is the CPU
    /// and candle is single-threaded (`crate::parallel`), each with a context that has its share
    /// of the threads and no progress bars when several run at once. Results in job order; the
    /// first failure is returned.
    pub fn side_by_side<J, R, E, F>(&self, jobs: &[J], wanted: usize, f: F) -> std::result::Result<Vec<R>, E>
    where
        J: Sync,
        R: Send,
        E: Send + From<TrainError>,
        F: Fn(&J, &RunContext) -> std::result::Result<R, E> + Sync,
    {
        let workers = crate::parallel::workers(wanted, jobs.len(), self.device.is_cpu(), self.threads);
        let sub = Self { quiet: self.quiet || workers > 1, threads: (self.threads / workers).max(1), ..self.clone() };
        let done = crate::parallel::side_by_side(jobs, workers, sub.threads, |j, _| f(j, &sub))?;
        let mut out = Vec::with_capacity(jobs.len());
        for r in done {
            // Jobs are taken in order and none starts after a failure, so a failure comes
            // before any job that did not run.
            match r {
                Some(r) => out.push(r?),
                None => return Err(TrainError::Config("a side-by-side run did not start".into()).into()),
            }
        }
        Ok(out)
    }
}
