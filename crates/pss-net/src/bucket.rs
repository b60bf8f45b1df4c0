//! Resource buckets (spec 2.2): `b(v) = round_half_even((v - o) / Delta) Delta + o`, with
//! `o = start mod Delta`.

/// The bucket of a resource value.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Bucketizer {
    /// `Delta`.
    pub step: f64,
    /// `o`.
    pub offset: f64,
}

impl Bucketizer {
    /// Buckets of width `step` aligned on `start`.
    pub fn new(start: f64, step: f64) -> Self {
        Self { step, offset: start.rem_euclid(step) }
    }

    /// `b(v)` (ties to even: 115 -> 120, 125 -> 120).
    pub fn bucket(&self, v: f64) -> f64 {
        ((v - self.offset) / self.step).round_ties_even() * self.step + self.offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_half_to_even_as_section_8() {
        let b = Bucketizer::new(110.0, 10.0);
        let got = [114.99, 115.0, 125.0, 125.01, 135.0, 555.01, 553.59].map(|v| b.bucket(v));
        assert_eq!(got, [110.0, 120.0, 120.0, 130.0, 140.0, 560.0, 550.0]);
        let shifted = Bucketizer::new(115.0, 10.0);
        assert_eq!(shifted.offset, 5.0);
        assert_eq!(shifted.bucket(119.0), 115.0);
    }
}
