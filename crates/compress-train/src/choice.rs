//! Choosing a rate on a validation split (a mini's rule: every arm gets its best recipe, chosen
//! on training data held out from training, never on the test set).

/// The rate of the first best score in `table` (`(rate, score)` in grid order): ties keep the
/// earlier rate, NaN never wins; NaN when no score is a number.
pub fn first_best(table: impl IntoIterator<Item = (f64, f64)>) -> f64 {
    table.into_iter().fold((f64::NAN, f64::NEG_INFINITY), |b, (lr, v)| if v > b.1 { (lr, v) } else { b }).0
}

/// The grid's table: `scores` lists every arm's score rate by rate (`scores.len() / grid.len()`
/// arms per rate, in grid order); one row `(rate, scores of each arm)` per rate.
pub fn table(grid: &[f64], scores: &[f64]) -> Vec<(f64, Vec<f64>)> {
    let k = scores.len() / grid.len().max(1);
    grid.iter().zip(scores.chunks(k.max(1))).map(|(&lr, v)| (lr, v.to_vec())).collect()
}

/// Each arm's (column's) first best rate in `table` ([`first_best`]; NaN for an arm that has
/// no score at any rate).
pub fn first_best_columns(table: &[(f64, Vec<f64>)]) -> Vec<f64> {
    let k = table.first().map_or(0, |r| r.1.len());
    (0..k).map(|i| first_best(table.iter().map(|r| (r.0, r.1.get(i).copied().unwrap_or(f64::NAN))))).collect()
}

/// A markdown table of a rate grid: one row per rate, one column per arm (2 decimals).
pub fn rate_table(first: &str, columns: &[&str], rows: &[(f64, Vec<f64>)]) -> String {
    let mut t = format!("| {first} | {} |\n| --- |{}\n", columns.join(" | "), " --- |".repeat(columns.len()));
    for (lr, v) in rows {
        t += &format!("| {lr} | {} |\n", v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" | "));
    }
    t
}

/// `"a 0.02, b 0.05"`: each arm's chosen rate.
pub fn chosen(arms: &[&str], rates: &[f64]) -> String {
    arms.iter().zip(rates).map(|(a, lr)| format!("{a} {lr}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_best_keeps_the_earlier_rate_and_skips_nan() {
        assert_eq!(first_best([(0.1, 80.0), (0.05, 90.0), (0.01, 90.0)]), 0.05);
        assert_eq!(first_best([(0.1, f64::NAN), (0.05, 10.0)]), 0.05);
        assert!(first_best([(0.1, f64::NAN)]).is_nan());
    }

    #[test]
    fn a_grid_table_picks_each_arms_first_best_rate() {
        let t = table(&[0.1, 0.2, 0.3], &[1.0, 5.0, 3.0, 5.0, 3.0, f64::NAN]);
        assert_eq!(t[..2], [(0.1, vec![1.0, 5.0]), (0.2, vec![3.0, 5.0])]);
        assert_eq!((t.len(), t[2].0, t[2].1[0]), (3, 0.3, 3.0));
        assert!(t[2].1[1].is_nan());
        assert_eq!(first_best_columns(&t), vec![0.2, 0.1]);
        assert!(first_best_columns(&table(&[0.1], &[f64::NAN]))[0].is_nan());
        assert!(first_best_columns(&[]).is_empty());
    }

    #[test]
    fn tables_print_every_rate_and_arm() {
        let t = rate_table("lr", &["a", "b"], &[(0.1, vec![1.0, 2.5]), (0.01, vec![f64::NAN, 3.0])]);
        assert_eq!(t, "| lr | a | b |\n| --- | --- | --- |\n| 0.1 | 1.00 | 2.50 |\n| 0.01 | NaN | 3.00 |\n");
        assert_eq!(chosen(&["a", "b"], &[0.1, 0.01]), "a 0.1, b 0.01");
    }
}
