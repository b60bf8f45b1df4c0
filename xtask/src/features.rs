//! `cargo xtask --features cuda ...`: the alias runs an xtask built with default features, so a
//! leading `--features` is honoured by rebuilding and re-running xtask with those features.

use anyhow::{Result, bail};
use std::process::Command;

/// The backend features this binary was built with.
pub fn compiled() -> Vec<&'static str> {
    let mut f = Vec::new();
    if cfg!(feature = "cuda") {
        f.push("cuda");
    }
    if cfg!(feature = "cudnn") {
        f.push("cudnn");
    }
    if cfg!(feature = "mkl") {
        f.push("mkl");
    }
    if cfg!(feature = "accelerate") {
        f.push("accelerate");
    }
    if cfg!(feature = "metal") {
        f.push("metal");
    }
    f
}

const KNOWN: [&str; 5] = ["cuda", "cudnn", "mkl", "accelerate", "metal"];
const REEXEC_ENV: &str = "COMPRESS_XTASK_REEXEC";

/// Splits a leading `--features a,b` (or `--features=a,b`) off the arguments.
pub fn split(args: &[String]) -> Result<(Vec<String>, Vec<String>)> {
    let (list, rest) = match args.first().map(String::as_str) {
        Some("--features") => match args.get(1) {
            Some(v) => (v.clone(), &args[2..]),
            None => bail!("--features needs a list, e.g. --features cuda"),
        },
        Some(a) if a.starts_with("--features=") => (a["--features=".len()..].to_string(), &args[1..]),
        _ => return Ok((Vec::new(), args.to_vec())),
    };
    let features: Vec<String> = list.split([',', ' ']).filter(|s| !s.is_empty()).map(str::to_string).collect();
    if let Some(bad) = features.iter().find(|f| !KNOWN.contains(&f.as_str())) {
        bail!("unknown feature {bad:?}; backend features: {}", KNOWN.join(", "));
    }
    Ok((features, rest.to_vec()))
}

/// If `wanted` features are missing from this binary, rebuilds xtask with them and runs it on
/// `rest`, returning its exit code; `None` when this binary already has them.
pub fn reexec_if_needed(wanted: &[String], rest: &[String]) -> Result<Option<i32>> {
    let have = compiled();
    if wanted.iter().all(|w| have.contains(&w.as_str())) {
        return Ok(None);
    }
    if std::env::var_os(REEXEC_ENV).is_some() {
        bail!("xtask was rebuilt but still lacks features {wanted:?} (has {have:?})");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["run", "--release", "--quiet", "--package", "xtask", "--features", &wanted.join(",")])
        .arg("--")
        .args(rest)
        .env(REEXEC_ENV, "1")
        .status()?;
    Ok(Some(status.code().unwrap_or(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn splits_leading_features_only() {
        assert_eq!(
            split(&s(&["--features", "cuda,cudnn", "data"])).expect("ok"),
            (s(&["cuda", "cudnn"]), s(&["data"]))
        );
        assert_eq!(split(&s(&["--features=mkl", "data"])).expect("ok"), (s(&["mkl"]), s(&["data"])));
        assert_eq!(split(&s(&["data", "--features", "x"])).expect("ok"), (vec![], s(&["data", "--features", "x"])));
        assert!(split(&s(&["--features", "tpu"])).is_err());
        assert!(split(&s(&["--features"])).is_err());
    }

    #[test]
    fn no_reexec_without_missing_features() {
        assert_eq!(reexec_if_needed(&[], &[]).expect("ok"), None);
    }
}
