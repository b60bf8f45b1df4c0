//! Choosing a rate on a validation split (a mini's rule: every arm gets its best recipe, chosen
//! on training data held out from training, never on the test set).

/// The rate of the first best score in `table` (`(rate, score)` in grid order): ties keep the
/// earlier rate, NaN never wins; NaN when no score is a number.
pub fn first_best(table: impl IntoIterator<Item = (f64, f64)>) -> f64 {
    table.into_iter().fold((f64::NAN, f64::NEG_INFINITY), |b, (lr, v)| if v > b.1 { (lr, v) } else { b }).0
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
    fn tables_print_every_rate_and_arm() {
        let t = rate_table("lr", &["a", "b"], &[(0.1, vec![1.0, 2.5]), (0.01, vec![f64::NAN, 3.0])]);
        assert_eq!(t, "| lr | a | b |\n| --- | --- | --- |\n| 0.1 | 1.00 | 2.50 |\n| 0.01 | NaN | 3.00 |\n");
        assert_eq!(chosen(&["a", "b"], &[0.1, 0.01]), "a 0.1, b 0.01");
    }
}
