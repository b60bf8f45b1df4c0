//! Class centres of the marginal distance constraint: per class, the running mean of the
//! teacher's features of every finished synthetic image of that class (eval mode, clean images).

use candle_core::{Device, Result, Tensor};

/// Feature sums and counts per class.
#[derive(Debug, Clone)]
pub struct ClassCentres {
    sums: Vec<Option<Vec<f64>>>,
    counts: Vec<usize>,
}

impl ClassCentres {
    /// An empty bank for `classes` classes.
    pub fn new(classes: usize) -> Self {
        Self { sums: vec![None; classes], counts: vec![0; classes] }
    }

    /// Adds features `[B, D]` with their labels.
    pub fn push(&mut self, feats: &Tensor, labels: &[u32]) -> Result<()> {
        let f: Vec<Vec<f32>> = feats.detach().to_dtype(candle_core::DType::F32)?.to_vec2()?;
        for (row, &y) in f.iter().zip(labels) {
            let k = y as usize;
            if k >= self.counts.len() {
                candle_core::bail!("label {y} outside {} classes", self.counts.len())
            }
            let s = self.sums[k].get_or_insert_with(|| vec![0.0; row.len()]);
            s.iter_mut().zip(row).for_each(|(a, &v)| *a += f64::from(v));
            self.counts[k] += 1;
        }
        Ok(())
    }

    /// The centre of class `k`, if it has one.
    pub fn get(&self, k: usize) -> Option<Vec<f32>> {
        let n = *self.counts.get(k)?;
        self.sums.get(k)?.as_ref().map(|s| s.iter().map(|v| (v / n as f64) as f32).collect())
    }

    /// Centres `[B, D]` for `labels` (zeros where a class has none) and the mask `[B]` (1 where it
    /// has one); `dim` is the feature width.
    pub fn gather(&self, labels: &[u32], dim: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let mut c = Vec::with_capacity(labels.len() * dim);
        let mut m = Vec::with_capacity(labels.len());
        for &y in labels {
            match self.get(y as usize) {
                Some(v) if v.len() == dim => {
                    c.extend(v);
                    m.push(1f32);
                }
                _ => {
                    c.extend(std::iter::repeat_n(0f32, dim));
                    m.push(0f32);
                }
            }
        }
        Ok((Tensor::from_vec(c, (labels.len(), dim), device)?, Tensor::from_vec(m, labels.len(), device)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centres_are_means_of_everything_pushed() {
        let dev = Device::Cpu;
        let mut b = ClassCentres::new(3);
        b.push(&Tensor::new(&[[1f32, 0.0], [3.0, 2.0]], &dev).unwrap(), &[1, 1]).unwrap();
        b.push(&Tensor::new(&[[5f32, 4.0]], &dev).unwrap(), &[1]).unwrap();
        assert_eq!(b.get(1), Some(vec![3.0, 2.0]));
        assert_eq!(b.get(0), None);
        let (c, m) = b.gather(&[0, 1], 2, &dev).unwrap();
        assert_eq!(c.to_vec2::<f32>().unwrap(), vec![vec![0.0, 0.0], vec![3.0, 2.0]]);
        assert_eq!(m.to_vec1::<f32>().unwrap(), vec![0.0, 1.0]);
        assert!(b.push(&Tensor::new(&[[1f32, 1.0]], &dev).unwrap(), &[7]).is_err());
    }
}
