//! The refresh as a training hook: at the start of every epoch, the temperature of the schedule
//! and a new `Phi` for every fused layer (skipped when a resumed run already refreshed it).

use crate::fused::{EpochRefresh, FusedNetwork};
use crate::temperature::TemperatureSchedule;
use candle_nn::VarMap;
use compress_nn::Architecture;
use compress_prune::LayerwiseRates;
use compress_train::Hooks;

/// Refreshes `net` at each epoch start and keeps what each refresh found.
#[derive(Debug)]
pub struct Refresher<'a, A: Architecture> {
    net: &'a FusedNetwork<A>,
    schedule: TemperatureSchedule,
    /// One entry per refresh this process ran.
    pub log: Vec<EpochRefresh>,
}

impl<'a, A: Architecture> Refresher<'a, A> {
    /// Refreshes `net` with temperatures from `schedule`.
    pub fn new(net: &'a FusedNetwork<A>, schedule: TemperatureSchedule) -> Self {
        Self { net, schedule, log: Vec::new() }
    }
}

impl<A: Architecture> Hooks for Refresher<'_, A>
where
    A::Config: LayerwiseRates,
{
    fn on_epoch_start(&mut self, epoch: usize, _vars: &VarMap) -> compress_train::Result<()> {
        let done = self.net.refreshed_epoch().map_err(|e| compress_train::TrainError::Config(e.to_string()))?;
        if done != Some(epoch) {
            let r = self
                .net
                .refresh(epoch, self.schedule.at(epoch))
                .map_err(|e| compress_train::TrainError::Config(e.to_string()))?;
            self.log.push(r);
        }
        Ok(())
    }
}
