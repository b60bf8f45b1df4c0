//! Intra-class heterogeneity (the paper's motivation, section 5 of the spec): the mean cosine
//! distance between the teacher's penultimate features of two images of the same class,
//! averaged over classes (pairs `i < j`; classes with fewer than two images are skipped).

/// Mean intra-class pairwise cosine distance of `features` (rows) with `labels`.
pub fn intra_class_cosine_distance(features: &[Vec<f32>], labels: &[u32]) -> f64 {
    let mut by_class: std::collections::BTreeMap<u32, Vec<Vec<f64>>> = std::collections::BTreeMap::new();
    for (f, &y) in features.iter().zip(labels) {
        let norm = f.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt().max(1e-12);
        by_class.entry(y).or_default().push(f.iter().map(|v| f64::from(*v) / norm).collect());
    }
    let mut per_class = Vec::new();
    for rows in by_class.values() {
        let n = rows.len();
        if n < 2 {
            continue;
        }
        // sum_{i<j} cos = (|sum_i u_i|^2 - n) / 2 for unit vectors u_i.
        let d = rows[0].len();
        let mut s = vec![0f64; d];
        for r in rows {
            s.iter_mut().zip(r).for_each(|(a, v)| *a += v);
        }
        let pairs = (n * (n - 1) / 2) as f64;
        let sum_cos = (s.iter().map(|v| v * v).sum::<f64>() - n as f64) / 2.0;
        per_class.push(1.0 - sum_cos / pairs);
    }
    per_class.iter().sum::<f64>() / per_class.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_distances_by_hand() {
        // Class 0: [1,0], [0,1], [1,1]: cos 0, 1/sqrt2, 1/sqrt2 -> mean distance 1 - sqrt2/3.
        // Class 1: identical directions -> 0. Class 2: a single image, skipped.
        let f = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![1.0, 1.0], vec![2.0, 2.0], vec![1.0, 1.0], vec![5.0, 1.0]];
        let y = vec![0, 0, 0, 1, 1, 2];
        let want = ((1.0 - 2f64.sqrt() / 3.0) + 0.0) / 2.0;
        assert!((intra_class_cosine_distance(&f, &y) - want).abs() < 1e-12);
    }
}
