//! The uniform-ratio baseline at a given cost: every group keeps `int(C (1 - r))` channels, `r`
//! on a 0.005 grid, and on a network of at most 4 groups any group may keep one more (every
//! per-layer ratio stays within one channel of the common one: with layers of 16 and 32 filters,
//! `int()` alone jumps by 8 % of the FLOPs). The structure whose FLOPs are nearest the target
//! wins (the first one on a tie). The L1 baselines of CLR-RNF and White-Box are built on it.

use crate::error::{Result, config_err};
use compress_nn::structure::Widths;
use std::collections::HashMap;

/// The uniform structure nearest a FLOPs target.
#[derive(Debug, Clone, PartialEq)]
pub struct UniformMatch {
    /// The common rate.
    pub rate: f64,
    /// The widths.
    pub widths: Widths,
    /// Their FLOPs.
    pub flops: u64,
}

/// `int(C (1 - r))`, at least 1 and at most `C`.
fn keep(c: usize, rate: f64) -> usize {
    ((c as f64 * (1.0 - rate)).floor() as usize).clamp(1, c.max(1))
}

/// Searches the uniform structures of `full` (group -> unpruned width) for the one whose
/// `flops(widths)` is nearest `target`.
pub fn uniform_at_flops(
    full: &Widths,
    target: u64,
    flops: &mut dyn FnMut(&Widths) -> Result<u64>,
) -> Result<UniformMatch> {
    if full.is_empty() {
        return Err(config_err("a uniform structure needs at least one group"));
    }
    let names: Vec<&String> = full.keys().collect();
    let combos = if names.len() <= 4 { 1usize << names.len() } else { 1 };
    let mut cache: HashMap<Vec<usize>, u64> = HashMap::new();
    let mut best: Option<UniformMatch> = None;
    for i in 0..190 {
        let rate = i as f64 * 0.005;
        let floor: Widths = full.iter().map(|(k, &c)| (k.clone(), keep(c, rate))).collect();
        for bits in 0..combos {
            let mut w = floor.clone();
            for (k, name) in names.iter().enumerate() {
                let exact = (full[*name] as f64 * (1.0 - rate)).fract() == 0.0;
                if (bits >> k) & 1 == 1 && !exact && floor[*name] < full[*name] {
                    w.insert((*name).clone(), floor[*name] + 1);
                }
            }
            let key: Vec<usize> = w.values().copied().collect();
            let f = match cache.get(&key) {
                Some(&f) => f,
                None => {
                    let f = flops(&w)?;
                    cache.insert(key, f);
                    f
                }
            };
            if best.as_ref().is_none_or(|b| f.abs_diff(target) < b.flops.abs_diff(target)) {
                best = Some(UniformMatch { rate, widths: w, flops: f });
            }
        }
    }
    best.ok_or_else(|| config_err("no uniform rate"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cost = sum of squared widths: the search finds an exact match where one exists and keeps
    /// every width within one channel of the common ratio.
    #[test]
    fn nearest_uniform_structure() {
        let full: Widths = [("a".to_string(), 16), ("b".to_string(), 32)].into();
        let mut f = |w: &Widths| -> Result<u64> { Ok(w.values().map(|&c| (c * c) as u64).sum()) };
        let m = uniform_at_flops(&full, 8 * 8 + 16 * 16, &mut f).unwrap();
        assert_eq!((m.widths["a"], m.widths["b"], m.flops), (8, 16, 320));
        assert!((0.45..=0.5).contains(&m.rate), "{}", m.rate);
        let m = uniform_at_flops(&full, 8 * 8 + 17 * 17, &mut f).unwrap();
        assert_eq!((m.widths["a"], m.widths["b"]), (8, 17));
        assert!(uniform_at_flops(&Widths::new(), 1, &mut f).is_err());
    }
}
