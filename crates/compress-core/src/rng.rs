//! One seeded source of randomness for a run.
//!
//! candle's CPU RNG cannot be seeded (`Device::Cpu.set_seed` errors), so every random draw of the
//! toolkit (initialisation, shuffling, augmentation, dropout, subnet sampling, synthetic images)
//! comes from a [`SeededRng`]. Streams are *derived*, not consumed in sequence: the generator for
//! `(seed, purpose, index)` is a pure function of those three values, so the shuffle of epoch 7 is
//! the same whether the run started at epoch 0 or resumed at epoch 7, with no state to checkpoint.

use rand::SeedableRng;
use rand::rngs::StdRng;

/// The run's root seed, from which independent named streams are derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeededRng {
    seed: u64,
}

impl SeededRng {
    /// A root generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }

    /// The root seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The generator of stream `purpose` (e.g. `"shuffle"`) at position `index` (e.g. the epoch).
    ///
    /// Streams of different purposes or indices are statistically independent (the key is mixed
    /// with SplitMix64 before seeding ChaCha12).
    pub fn stream(&self, purpose: &str, index: u64) -> StdRng {
        StdRng::seed_from_u64(self.key(purpose, index))
    }

    /// A child root generator, for handing a sub-component its own seed space.
    pub fn child(&self, purpose: &str) -> SeededRng {
        SeededRng::new(self.key(purpose, u64::MAX))
    }

    fn key(&self, purpose: &str, index: u64) -> u64 {
        // FNV-1a of the purpose, then SplitMix64 finalisation of the combined words.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in purpose.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        splitmix64(splitmix64(self.seed ^ h).wrapping_add(index))
    }
}

/// SplitMix64 finaliser (Steele, Lea & Flood 2014), a bijective 64-bit mixer.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn draw(mut r: StdRng) -> Vec<u32> {
        (0..8).map(|_| r.random()).collect()
    }

    #[test]
    fn same_seed_purpose_index_repeats() {
        let a = SeededRng::new(42);
        let b = SeededRng::new(42);
        assert_eq!(draw(a.stream("shuffle", 3)), draw(b.stream("shuffle", 3)));
    }

    #[test]
    fn streams_differ_by_seed_purpose_and_index() {
        let r = SeededRng::new(42);
        let base = draw(r.stream("shuffle", 3));
        assert_ne!(base, draw(r.stream("shuffle", 4)));
        assert_ne!(base, draw(r.stream("augment", 3)));
        assert_ne!(base, draw(SeededRng::new(43).stream("shuffle", 3)));
        assert_ne!(r.child("a").seed(), r.child("b").seed());
    }
}
