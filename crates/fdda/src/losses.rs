//! FDDA's BNS losses (spec 2.3): the centralised C-BNS, the distorted D-BNS and the warm-up noise
//! branch, over the deep layers `l >= s` of a class-conditional batch's BatchNorm-input
//! statistics. The plain `L_BNS` against running statistics is `compress_synth::losses`'.

use crate::centres::BnsCentres;
use crate::error::{Result, config_err};
use candle_core::Tensor;
use compress_nn::probe::BnInput;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};

/// The first deep layer `s = floor((L + 1) / 2) - 2` (0 when that is negative).
pub fn deep_start(num_bn: usize) -> usize {
    num_bn.div_ceil(2).saturating_sub(2)
}

fn mse(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok((a - b)?.sqr()?.mean_all()?)
}

fn check(stats: &[BnInput], centres: &BnsCentres, class: usize, start: usize) -> Result<()> {
    if stats.len() != centres.layers() || class >= centres.classes() || start >= stats.len() {
        return Err(config_err(format!(
            "{} BN layers against centres of {} layers, class {class} of {}, deep start {start}",
            stats.len(),
            centres.layers(),
            centres.classes()
        )));
    }
    Ok(())
}

/// `f(t)`: `N(0, std^2)` noise shaped and typed as `t`, drawn from `rng`.
fn noise(t: &Tensor, std: f64, rng: &mut StdRng) -> Result<Tensor> {
    let n = Normal::new(0.0, std).map_err(|e| config_err(e.to_string()))?;
    let v: Vec<f64> = (0..t.elem_count()).map(|_| n.sample(rng)).collect();
    Ok(Tensor::from_vec(v, t.dims(), t.device())?.to_dtype(t.dtype())?)
}

/// `(1/|D|) sum_{l >= start} [MSE(mu_l, m_l + f_mean) + MSE(var_l, v_l + f_var)]` with the
/// targets' offsets from `offset(layer, target)`.
fn deep_loss(
    stats: &[BnInput],
    centres: &BnsCentres,
    class: usize,
    start: usize,
    offset: &mut dyn FnMut(&Tensor, f64) -> Result<Option<Tensor>>,
    sigma: (f64, f64),
) -> Result<Tensor> {
    check(stats, centres, class, start)?;
    let mut total: Option<Tensor> = None;
    for (l, s) in stats.iter().enumerate().skip(start) {
        let (m, v) = (&centres.mean[class][l], &centres.var[class][l]);
        let tm = match offset(m, sigma.0)? {
            Some(f) => (m + f)?,
            None => m.clone(),
        };
        let tv = match offset(v, sigma.1)? {
            Some(f) => (v + f)?,
            None => v.clone(),
        };
        let t = (mse(&s.mean, &tm)? + mse(&s.var, &tv)?)?;
        total = Some(match total {
            None => t,
            Some(a) => (a + t)?,
        });
    }
    let total = total.ok_or_else(|| config_err("no deep layer"))?;
    Ok((total / (stats.len() - start) as f64)?)
}

/// C-BNS: `(1/|D|) sum_{l in D} [MSE(mu'_l, m^c_l) + MSE(var'_l, v^c_l)]`, `D = {start..L-1}`.
pub fn cbns_loss(stats: &[BnInput], centres: &BnsCentres, class: usize, start: usize) -> Result<Tensor> {
    deep_loss(stats, centres, class, start, &mut |_, _| Ok(None), (0.0, 0.0))
}

/// D-BNS: C-BNS with targets `m^c_l + sigma_mean xi_l`, `v^c_l + sigma_var zeta_l`, the noise
/// fresh per layer from `rng` (no clamp: a variance target may be negative).
pub fn dbns_loss(
    stats: &[BnInput],
    centres: &BnsCentres,
    class: usize,
    start: usize,
    sigma_mean: f64,
    sigma_var: f64,
    rng: &mut StdRng,
) -> Result<Tensor> {
    let mut offset = |t: &Tensor, std: f64| -> Result<Option<Tensor>> {
        if std == 0.0 { Ok(None) } else { Ok(Some(noise(t, std, rng)?)) }
    };
    deep_loss(stats, centres, class, start, &mut offset, (sigma_mean, sigma_var))
}

/// The warm-up branch for a class outside `K`: `(2/L) sum_{all l} [MSE(mu'_l, xi_l) +
/// MSE(var'_l, zeta_l)]`, targets pure `N(0, 1)` noise.
pub fn noise_loss(stats: &[BnInput], rng: &mut StdRng) -> Result<Tensor> {
    let mut total: Option<Tensor> = None;
    for s in stats {
        let t = (mse(&s.mean, &noise(&s.mean, 1.0, rng)?)? + mse(&s.var, &noise(&s.var, 1.0, rng)?)?)?;
        total = Some(match total {
            None => t,
            Some(a) => (a + t)?,
        });
    }
    let total = total.ok_or_else(|| config_err("no BatchNorm statistics"))?;
    Ok((total * (2.0 / stats.len() as f64))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use rand::SeedableRng;

    fn t(v: &[f64]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    fn scalar(x: &Tensor) -> f64 {
        x.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    fn example() -> (Vec<BnInput>, BnsCentres) {
        let s = BnInput {
            mean: t(&[1.0, 2.0]),
            var: t(&[1.0, 1.0]),
            running_mean: t(&[0.0, 0.0]),
            running_var: t(&[1.0, 1.0]),
            count: 2,
            prefix: "bn".into(),
        };
        let c = BnsCentres { mean: vec![vec![t(&[0.5, 2.5])]], var: vec![vec![t(&[2.0, 0.5])]], correct: vec![true] };
        (vec![s], c)
    }

    /// Section 8: deep_start 20 -> 8, 27 -> 12, 52 -> 24, 53 -> 25, 4 -> 0.
    #[test]
    fn deep_starts() {
        assert_eq!([20, 27, 52, 53, 4].map(deep_start), [8, 12, 24, 25, 0]);
    }

    /// Section 8: C-BNS 0.25 + 0.625 = 0.875; D-BNS with zero noise equals it; its Monte-Carlo
    /// mean over 200k draws is 2.125 +- 0.02 (= 0.875 + 0.25 + 1.0).
    #[test]
    fn cbns_and_dbns_of_the_example() {
        let (s, c) = example();
        assert!((scalar(&cbns_loss(&s, &c, 0, 0).unwrap()) - 0.875).abs() < 1e-12);
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(scalar(&dbns_loss(&s, &c, 0, 0, 0.0, 0.0, &mut rng).unwrap()), 0.875);
        let n = 200_000;
        let sum: f64 = (0..n).map(|_| scalar(&dbns_loss(&s, &c, 0, 0, 0.5, 1.0, &mut rng).unwrap())).sum();
        assert!((sum / n as f64 - 2.125).abs() < 0.02, "{}", sum / n as f64);
        assert!(cbns_loss(&s, &c, 1, 0).is_err() && cbns_loss(&s, &c, 0, 1).is_err());
    }

    #[test]
    fn the_noise_branch_averages_twice_over_all_layers() {
        let (mut s, _) = example();
        s.push(s[0].clone());
        let mut rng = StdRng::seed_from_u64(1);
        // E[MSE(x, xi)] = MSE(x, 0) + 1 per statistic: means (1 + 4) / 2 + 1, variances 1 + 1.
        let n = 20_000;
        let mean: f64 = (0..n).map(|_| scalar(&noise_loss(&s, &mut rng).unwrap())).sum::<f64>() / n as f64;
        assert!((mean - 2.0 * (3.5 + 2.0)).abs() < 0.1, "{mean}");
    }
}
