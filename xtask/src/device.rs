//! `--device cpu|cuda:N|metal:N` to a candle device, with the feature that each one needs.

use anyhow::{Context, Result, bail};
use candle_core::Device;

/// Parses a device name; CUDA and Metal need the binary built with `--features cuda`/`metal`.
pub fn parse(name: &str) -> Result<Device> {
    let (kind, ordinal) = match name.split_once(':') {
        Some((k, n)) => (k, n.parse::<usize>().with_context(|| format!("device ordinal in {name:?}"))?),
        None => (name, 0),
    };
    match kind {
        "cpu" if ordinal == 0 => Ok(Device::Cpu),
        "cpu" => bail!("device {name:?}: there is one CPU device, `cpu` (use --threads to choose cores)"),
        "cuda" => {
            Device::new_cuda(ordinal).with_context(|| format!("device {name}: is xtask built with --features cuda?"))
        }
        "metal" => {
            Device::new_metal(ordinal).with_context(|| format!("device {name}: is xtask built with --features metal?"))
        }
        _ => bail!("unknown device {name:?}: use cpu, cuda:N or metal:N"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_nonsense() {
        assert!(parse("cpu").expect("cpu").is_cpu());
        assert!(parse("cpu:0").expect("cpu:0").is_cpu());
        assert!(parse("cpu:7").expect_err("one cpu").to_string().contains("one CPU device"));
        assert!(parse("tpu:0").is_err());
        assert!(parse("cuda:x").is_err());
        #[cfg(not(feature = "cuda"))]
        assert!(parse("cuda:0").expect_err("no cuda").to_string().contains("--features cuda"));
    }
}
