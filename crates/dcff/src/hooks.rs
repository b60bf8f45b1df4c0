//! The refresh as a training hook: at the start of every epoch, the temperature of the schedule
//! and a new `Phi` for every fused layer (skipped when a resumed run already refreshed it).

use crate::fused::{EpochRefresh, FusedNetwork};
use crate::temperature::TemperatureSchedule;
use candle_nn::VarMap;
use compress_nn::Architecture;
use compress_prune::LayerwiseRates;
use compress_train::Hooks;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Refreshes `net` at each epoch start and keeps what each refresh found.
#[derive(Debug)]
pub struct Refresher<'a, A: Architecture> {
    net: &'a FusedNetwork<A>,
    schedule: TemperatureSchedule,
    /// One entry per refresh this process ran.
    pub log: Vec<EpochRefresh>,
    journal: Option<PathBuf>,
}

impl<'a, A: Architecture> Refresher<'a, A> {
    /// Refreshes `net` with temperatures from `schedule`.
    pub fn new(net: &'a FusedNetwork<A>, schedule: TemperatureSchedule) -> Self {
        Self { net, schedule, log: Vec::new(), journal: None }
    }

    /// Also appends every refresh as a JSON line to `path`, so that the record of an
    /// interrupted and resumed run is whole (read it back with [`read_journal`]).
    pub fn journal(mut self, path: PathBuf) -> Self {
        self.journal = Some(path);
        self
    }
}

/// The refreshes of a journal, one per epoch (the last one written wins: a run resumed from a
/// checkpoint older than a refresh repeats that refresh).
pub fn read_journal(path: &Path) -> std::io::Result<Vec<EpochRefresh>> {
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let mut by_epoch = BTreeMap::new();
    for line in std::fs::read_to_string(path)?.lines().filter(|l| !l.trim().is_empty()) {
        let r: EpochRefresh = serde_json::from_str(line).map_err(std::io::Error::other)?;
        by_epoch.insert(r.epoch, r);
    }
    Ok(by_epoch.into_values().collect())
}

impl<A: Architecture> Hooks for Refresher<'_, A>
where
    A::Config: LayerwiseRates,
{
    fn on_epoch_start(&mut self, epoch: usize, _vars: &VarMap) -> compress_train::Result<()> {
        let done = self.net.refreshed_epoch().map_err(compress_train::error::method_err)?;
        if done != Some(epoch) {
            let r = self.net.refresh(epoch, self.schedule.at(epoch)).map_err(compress_train::error::method_err)?;
            if let Some(path) = &self.journal {
                let err = |e: std::io::Error| compress_train::error::file_err(path, e);
                let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(err)?;
                let line = serde_json::to_string(&r).map_err(|e| err(std::io::Error::other(e)))?;
                writeln!(f, "{line}").map_err(err)?;
            }
            self.log.push(r);
        }
        Ok(())
    }
}
