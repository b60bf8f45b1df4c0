//! `cargo xtask reproduce`: the registry of reproductions and how one runs (threads, side-by-side
//! re-execution, partial outcomes), `reproduce all` and its summary.

use anyhow::{Context, Result, bail};
use compress_train::harness::{self, Reproduction};
use compress_train::parallel::candle_single_threaded;
use compress_train::{Outcome, RunContext};
use std::path::{Path, PathBuf};

/// The methods that have landed, in the order `reproduce all` runs them.
pub fn registry() -> [&'static dyn Reproduction; 10] {
    [
        &dcff::reproduce::DcffReproduction,
        &onexn::reproduce::OnexnReproduction,
        &intraq::reproduce::IntraqReproduction,
        &cf_vit::reproduce::CfVitReproduction,
        &ddtb::reproduce::DdtbReproduction,
        &clr_rnf::reproduce::ClrRnfReproduction,
        &fdda::reproduce::FddaReproduction,
        &whitebox::reproduce::WhiteBoxReproduction,
        &optg::reproduce::OptgReproduction,
        &pss_net::reproduce::PssReproduction,
    ]
}

/// The ten methods, each with what it is; those not in the registry arrive with their issues.
pub const METHODS: [(&str, &str); 10] = [
    ("ddtb", "2-4 bit quantization of super-resolution networks"),
    ("cf-vit", "coarse-to-fine vision transformer"),
    ("clr-rnf", "filter pruning by cross-layer ranking and reciprocal neighbours"),
    ("dcff", "dynamic-coded filter fusion"),
    ("optg", "gradient-driven unstructured sparsity"),
    ("intraq", "zero-shot quantization from synthetic images"),
    ("fdda", "post-training quantization with synthetic + calibration data"),
    ("pss-net", "resource-adaptive supernet"),
    ("onexn", "1xN block sparsity"),
    ("whitebox", "class-wise channel pruning"),
];

/// Where a child of `reproduce all` writes its outcome's summary.
const SUMMARY_ENV: &str = "COMPRESS_REPRODUCE_SUMMARY";

/// The command-line options of `reproduce`.
#[derive(Debug, Clone)]
pub struct Options {
    pub profile: String,
    pub device: String,
    pub resume: bool,
    pub seeds: Option<Vec<u64>>,
    pub threads: Option<usize>,
    pub quiet: bool,
}

/// `--seeds 3,4,5`.
pub fn parse_seeds(s: &str) -> Result<Vec<u64>> {
    let seeds = s
        .split(',')
        .map(|x| x.trim().parse::<u64>().with_context(|| format!("--seeds {s:?}: {x:?} is not a seed")))
        .collect::<Result<Vec<_>>>()?;
    if seeds.is_empty() {
        bail!("--seeds needs at least one seed");
    }
    Ok(seeds)
}

/// The registry and the methods still to come, with their profiles.
pub fn list() -> String {
    let mut s = String::from("| method | what | profiles |\n| --- | --- | --- |\n");
    for (name, what) in METHODS {
        let profiles = match registry().into_iter().find(|r| r.info().name == name) {
            Some(r) => {
                r.info().profiles.iter().map(|(p, about)| format!("`{p}`: {about}")).collect::<Vec<_>>().join("; ")
            }
            None => "not implemented yet (its own issue)".into(),
        };
        s += &format!("| {name} | {what} | {profiles} |\n");
    }
    s + "\n`cargo xtask reproduce <method> [--profile P] [--seeds 3,4,5] [--threads N] [--device cpu|cuda:N] [--resume]`; \
         `cargo xtask reproduce all` runs every method's mini one after another.\n"
}

fn find(method: &str) -> Result<&'static dyn Reproduction> {
    if let Some(r) = registry().into_iter().find(|r| r.info().name == method) {
        return Ok(r);
    }
    let known: Vec<&str> = METHODS.iter().map(|m| m.0).collect();
    match METHODS.iter().find(|m| m.0 == method) {
        Some((_, what)) => bail!(
            "{method} ({what}) is not implemented yet: its crate arrives with its own issue. `cargo xtask reproduce` \
             lists what runs today."
        ),
        None => bail!("unknown method {method:?}; known methods: {}, all", known.join(", ")),
    }
}

/// The number in an environment variable.
fn env_number(key: &str) -> Option<usize> {
    std::env::var(key).ok().and_then(|v| v.trim().parse().ok())
}

/// Runs this command again in a child process whose candle and rayon pools have `threads`
/// threads (read once, when each pool starts).
fn rerun_with_threads(threads: usize, what: &str) -> Result<()> {
    let n = threads.to_string();
    let status = std::process::Command::new(std::env::current_exe()?)
        .args(std::env::args().skip(1))
        .env("CANDLE_NUM_THREADS", &n)
        .env("RAYON_NUM_THREADS", &n)
        .status()?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// `cargo xtask reproduce <method>`: runs one profile; a partial outcome prints what it computed
/// and what is missing, and fails.
pub fn reproduce(method: &str, o: &Options) -> Result<()> {
    if method == "all" {
        return all(o);
    }
    let r = find(method)?;
    if !r.info().has(&o.profile) {
        bail!("{method} has no profile {:?}; its profiles: {}", o.profile, r.info().profile_names().join(", "));
    }
    let profile = o.profile.as_str();
    let dev = crate::device::parse(&o.device)?;
    let side_by_side = dev.is_cpu() && r.side_by_side(profile);
    let pooled = side_by_side && candle_single_threaded();
    // `--threads N`: every pool of this process at N threads (the side-by-side child keeps its
    // single-threaded pools and splits N between its runs).
    if let Some(n) = o.threads
        && !pooled
        && (env_number("RAYON_NUM_THREADS") != Some(n) || env_number("CANDLE_NUM_THREADS") != Some(n))
    {
        return rerun_with_threads(n, &format!("reproduce {method}"));
    }
    let ctx = RunContext::new("runs", dev).resume(o.resume).quiet(o.quiet).seeds(o.seeds.clone()).threads(o.threads);
    if side_by_side && !pooled {
        // Work that wants every core (a full-precision start), then the arms side by side, one
        // core each, in a child whose candle pool is single-threaded.
        harness::prepare(r, profile, &ctx).map_err(|e| anyhow::anyhow!(e))?;
        return rerun_with_threads(1, &format!("the {method} runs"));
    }
    let start = std::time::Instant::now();
    let out = harness::reproduce(r, profile, &ctx).map_err(|e| anyhow::anyhow!(e))?;
    let seconds = start.elapsed().as_secs_f64();
    println!("{}", out.report().markdown());
    println!("run: {} ({seconds:.0} s)", out.dir().display());
    if let Some(path) = std::env::var_os(SUMMARY_ENV) {
        let (held, total) = out.report().claims();
        let v = serde_json::json!({"dir": out.dir(), "held": held, "total": total, "missing": out.missing()});
        compress_train::record::write_atomic(Path::new(&path), v.to_string().as_bytes())?;
    }
    if let Outcome::Partial { missing, .. } = &out {
        eprintln!("not everything could run here; missing:");
        for m in missing {
            eprintln!("  - {m}");
        }
        bail!("{method} --profile {profile}: partial ({} missing)", missing.len());
    }
    Ok(())
}

/// `cargo xtask reproduce all`: every method's mini (or `--profile`) one after another, each in
/// its own process, then one summary table.
fn all(o: &Options) -> Result<()> {
    let start = std::time::Instant::now();
    let dir = tempfile_dir()?;
    let mut rows = Vec::new();
    for r in registry() {
        let name = r.info().name;
        let path = dir.join(format!("{name}.json"));
        let mut args: Vec<String> =
            vec!["reproduce".into(), name.into(), "--profile".into(), o.profile.clone(), "--device".into()];
        args.push(o.device.clone());
        if o.resume {
            args.push("--resume".into());
        }
        if let Some(s) = &o.seeds {
            args.push("--seeds".into());
            args.push(s.iter().map(u64::to_string).collect::<Vec<_>>().join(","));
        }
        if let Some(t) = o.threads {
            args.push("--threads".into());
            args.push(t.to_string());
        }
        if o.quiet {
            args.push("--quiet".into());
        }
        println!("== cargo xtask {}", args.join(" "));
        let t0 = std::time::Instant::now();
        let status =
            std::process::Command::new(std::env::current_exe()?).args(&args).env(SUMMARY_ENV, &path).status()?;
        let minutes = t0.elapsed().as_secs_f64() / 60.0;
        let summary: Option<serde_json::Value> =
            std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok());
        rows.push((name, status.success(), summary, minutes));
    }
    println!("\n| method | claims held / total | minutes | run |\n| --- | --- | --- | --- |");
    let mut failed = Vec::new();
    for (name, ok, summary, minutes) in &rows {
        let (claims, run) = match summary {
            Some(s) => (
                format!("{} / {}", s["held"].as_u64().unwrap_or(0), s["total"].as_u64().unwrap_or(0)),
                s["dir"].as_str().unwrap_or("-").to_string(),
            ),
            None => ("failed".to_string(), "-".to_string()),
        };
        if !ok {
            failed.push(*name);
        }
        println!("| {name} | {claims} | {minutes:.1} | {run} |");
    }
    println!("\nall: {:.1} minutes", start.elapsed().as_secs_f64() / 60.0);
    let _ = std::fs::remove_dir_all(&dir);
    if !failed.is_empty() {
        bail!("{} did not finish", failed.join(", "));
    }
    Ok(())
}

/// A fresh folder for the children's summaries.
fn tempfile_dir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("compress-reproduce-all-{}", std::process::id()));
    std::fs::create_dir_all(&d).with_context(|| d.display().to_string())?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(profile: &str) -> Options {
        Options {
            profile: profile.into(),
            device: "cpu".into(),
            resume: false,
            seeds: None,
            threads: None,
            quiet: true,
        }
    }

    #[test]
    fn unknown_methods_and_profiles_are_named() {
        let e = reproduce("prune-all", &opts("mini")).expect_err("unknown");
        assert!(e.to_string().contains("known methods: ddtb, cf-vit"), "{e}");
        let e = reproduce("dcff", &opts("huge")).expect_err("bad profile");
        assert!(e.to_string().contains("its profiles: smoke, mini, paper"), "{e}");
        let e = reproduce("dcff", &opts("mini-long")).expect_err("intraq only");
        assert!(e.to_string().contains("no profile \"mini-long\""), "{e}");
        // Every method of the list has landed in the registry.
        for (m, _) in METHODS {
            assert!(registry().iter().any(|r| r.info().name == m), "{m}");
        }
    }

    #[test]
    fn seeds_parse_and_the_list_names_every_method() {
        assert_eq!(parse_seeds("3,4, 5").expect("seeds"), vec![3, 4, 5]);
        assert!(parse_seeds("3,x").is_err());
        let l = list();
        for (m, _) in METHODS {
            assert!(l.contains(&format!("| {m} |")), "{l}");
        }
        assert!(l.contains("`mini-long`"), "{l}");
        let names: Vec<&str> = registry().iter().map(|r| r.info().name).collect();
        assert_eq!(
            names,
            ["dcff", "onexn", "intraq", "cf-vit", "ddtb", "clr-rnf", "fdda", "whitebox", "optg", "pss-net"]
        );
    }
}
