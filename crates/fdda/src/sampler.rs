//! The class batch's label (spec 2.3 step 2): uniform over the classes; after the warm-up epochs
//! only classes in `K` (correctly classified calibration images), redrawn until one is. Which
//! BNS branch a class gets follows from the same rule.

use crate::error::{Result, config_err};
use rand::Rng;
use rand::rngs::StdRng;

/// Which loss the class batch gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Branch {
    /// C-BNS and D-BNS around the class's centre.
    Centred,
    /// D-BNS against pure noise over every layer, no C-BNS (warm-up epochs, class outside `K`).
    Noise,
}

/// The class sampler.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassSampler {
    correct: Vec<bool>,
    /// Epochs `0..=warmup` draw from every class (the code: 4).
    pub warmup: usize,
}

impl ClassSampler {
    /// A sampler over `correct.len()` classes, `K = {k : correct[k]}`; an empty `K` is an error.
    pub fn new(correct: Vec<bool>, warmup: usize) -> Result<Self> {
        if !correct.iter().any(|&c| c) {
            return Err(config_err("the teacher misclassifies every calibration image: K is empty"));
        }
        Ok(Self { correct, warmup })
    }

    /// The class of one class batch at `epoch`.
    pub fn draw(&self, epoch: usize, rng: &mut StdRng) -> usize {
        loop {
            let c = rng.random_range(0..self.correct.len());
            if epoch <= self.warmup || self.correct[c] {
                return c;
            }
        }
    }

    /// The branch class `c` gets at `epoch`.
    pub fn branch(&self, epoch: usize, c: usize) -> Branch {
        if epoch <= self.warmup && !self.correct.get(c).copied().unwrap_or(false) {
            Branch::Noise
        } else {
            Branch::Centred
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Section 8: after epoch 4 the sampler never returns a class outside K; the noise branch
    /// fires only for epoch <= 4 and a class outside K.
    #[test]
    fn after_the_warmup_only_k() {
        let s = ClassSampler::new(vec![true, false, true, false], 4).unwrap();
        let mut rng = StdRng::seed_from_u64(0);
        let early: Vec<usize> = (0..400).map(|_| s.draw(4, &mut rng)).collect();
        assert!(early.contains(&1) && early.contains(&3), "every class during the warm-up");
        assert!((0..2000).all(|_| [0, 2].contains(&s.draw(5, &mut rng))));
        assert_eq!((s.branch(4, 1), s.branch(4, 0), s.branch(5, 1)), (Branch::Noise, Branch::Centred, Branch::Centred));
        assert!(ClassSampler::new(vec![false, false], 4).is_err());
    }
}
