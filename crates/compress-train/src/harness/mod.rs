//! The reproduction harness: what every method crate's `cargo xtask reproduce <method>` shares.
//!
//! A method crate implements [`Reproduction`] once (its name, profiles, whether its arms run
//! side by side, an optional `prepare`, and `run`); [`reproduce`] checks the profile, binds a
//! [`RunContext`] to the method and profile, and runs it. The context creates or resumes run
//! folders, records the device one way, resolves `--seeds` and `--threads`, places small runs
//! side by side, and stamps reports with their command, profile and seeds. A profile that cannot
//! train here returns [`Outcome::Partial`] with what it computed and what is missing.

pub(crate) mod context;

pub use context::{RunContext, device_name};

use crate::report::Report;
use std::path::{Path, PathBuf};

/// The error a reproduction returns: any crate's error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a reproduction is: its name on the command line, what the method is, and its profiles
/// as `(name, what it runs)`, the smallest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    /// The method's name on the command line (`dcff`).
    pub name: &'static str,
    /// What the method is, in a few words.
    pub about: &'static str,
    /// `(profile, what it runs)`: `smoke`, `mini`, `paper`, ...
    pub profiles: &'static [(&'static str, &'static str)],
}

impl Info {
    /// Whether `profile` is one of these.
    pub fn has(&self, profile: &str) -> bool {
        self.profiles.iter().any(|p| p.0 == profile)
    }

    /// The profiles' names.
    pub fn profile_names(&self) -> Vec<&'static str> {
        self.profiles.iter().map(|p| p.0).collect()
    }
}

/// What a reproduction produced.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Everything the profile measures was measured.
    Complete {
        /// The run folder holding the report.
        dir: PathBuf,
        /// The report.
        report: Report,
    },
    /// What could be computed here, and what the rest needs (a dataset, weights, a GPU).
    Partial {
        /// The run folder holding the report.
        dir: PathBuf,
        /// The report of what was computed.
        report: Report,
        /// What is missing, one item each, with how to get it.
        missing: Vec<String>,
    },
}

impl Outcome {
    /// `Complete` when nothing is missing, else `Partial`.
    pub fn new(dir: &Path, report: Report, missing: Vec<String>) -> Self {
        let dir = dir.to_path_buf();
        if missing.is_empty() { Self::Complete { dir, report } } else { Self::Partial { dir, report, missing } }
    }

    /// The run folder.
    pub fn dir(&self) -> &Path {
        match self {
            Self::Complete { dir, .. } | Self::Partial { dir, .. } => dir,
        }
    }

    /// The report.
    pub fn report(&self) -> &Report {
        match self {
            Self::Complete { report, .. } | Self::Partial { report, .. } => report,
        }
    }

    /// What is missing (empty when complete).
    pub fn missing(&self) -> &[String] {
        match self {
            Self::Complete { .. } => &[],
            Self::Partial { missing, .. } => missing,
        }
    }
}

/// A paper's experiment, as `cargo xtask reproduce <name>` runs it.
pub trait Reproduction: Sync {
    /// Its name, what it is, its profiles.
    fn info(&self) -> &'static Info;

    /// Whether `profile` trains its arms side by side on one core each (the caller then runs it
    /// in a process whose candle pool is single-threaded: `crate::parallel`).
    fn side_by_side(&self, profile: &str) -> bool {
        let _ = profile;
        false
    }

    /// Work to do on every core before the arms run side by side (train or find a cached
    /// full-precision start).
    fn prepare(&self, profile: &str, ctx: &RunContext) -> Result<(), BoxError> {
        let _ = (profile, ctx);
        Ok(())
    }

    /// Runs `profile`.
    fn run(&self, profile: &str, ctx: &RunContext) -> Result<Outcome, BoxError>;
}

/// Checks that `r` has `profile` and returns the context bound to it.
fn bind(r: &dyn Reproduction, profile: &str, ctx: &RunContext) -> Result<RunContext, BoxError> {
    let info = r.info();
    let Some(&(name, _)) = info.profiles.iter().find(|p| p.0 == profile) else {
        let names = info.profile_names().join(", ");
        return Err(format!("{} has no profile {profile:?}; its profiles: {names}", info.name).into());
    };
    Ok(ctx.bound(info.name, name))
}

/// Runs `profile` of `r` in `ctx`.
pub fn reproduce(r: &dyn Reproduction, profile: &str, ctx: &RunContext) -> Result<Outcome, BoxError> {
    let ctx = bind(r, profile, ctx)?;
    r.run(profile, &ctx)
}

/// Runs `r`'s preparation for `profile` in `ctx`.
pub fn prepare(r: &dyn Reproduction, profile: &str, ctx: &RunContext) -> Result<(), BoxError> {
    let ctx = bind(r, profile, ctx)?;
    r.prepare(profile, &ctx)
}

#[cfg(test)]
mod tests;
