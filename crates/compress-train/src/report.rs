//! Reports: the table a run ends with (setting, baseline, method, paper, delta, claim, verdict),
//! its profile and seeds, the decimals it prints with, and Markdown notes after the table.

use serde::{Deserialize, Serialize};

/// Whether a claim held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// The measured result supports the claim.
    Holds,
    /// It does not.
    Fails,
    /// Nothing to judge (a reference or recorded figure).
    Info,
    /// The claim could not be judged here: a figure it needs was not measured.
    Missing,
    /// The means over seeds point the claim's way, but the two arms' seed ranges overlap: the
    /// margin is inside the spread, so the claim is not supported (it does not count as held).
    WithinNoise,
}

/// One arm's figure over seeds: minimum, mean, maximum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Largest.
    pub max: f64,
    /// Seeds.
    pub n: usize,
}

impl Spread {
    /// The spread of `values` (`None` for none).
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let (min, max) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
        Some(Self { min, mean: values.iter().sum::<f64>() / values.len() as f64, max, n: values.len() })
    }
}

/// How a claim row's verdict follows from its figures. `b`, `m`, `p` are the row's baseline,
/// method and paper figures; a rule whose figures are absent gives [`Verdict::Missing`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// `m > b + margin`.
    Above(f64),
    /// `m >= b + margin`.
    AtLeast(f64),
    /// `|m - b| <= tolerance`.
    Within(f64),
    /// `m >= p + margin` (a negative margin: "at most this far below the paper").
    PaperAtLeast(f64),
    /// `|m - p| <= tolerance`.
    PaperWithin(f64),
    /// A condition computed from more than the row's figures (an order of four arms, a ratio
    /// on every seed): the crate states it, the row records it.
    Holds(bool),
}

impl Rule {
    /// The verdict of this rule on `(baseline, method, paper)`.
    pub fn judge(self, baseline: Option<f64>, method: Option<f64>, paper: Option<f64>) -> Verdict {
        let v = |ok: bool| if ok { Verdict::Holds } else { Verdict::Fails };
        match (self, baseline, method, paper) {
            (Rule::Holds(ok), ..) => v(ok),
            (Rule::Above(x), Some(b), Some(m), _) => v(m > b + x),
            (Rule::AtLeast(x), Some(b), Some(m), _) => v(m >= b + x),
            (Rule::Within(x), Some(b), Some(m), _) => v((m - b).abs() <= x),
            (Rule::PaperAtLeast(x), _, Some(m), Some(p)) => v(m >= p + x),
            (Rule::PaperWithin(x), _, Some(m), Some(p)) => v((m - p).abs() <= x),
            _ => Verdict::Missing,
        }
    }

    /// The verdict on two arms' figures over seeds: the rule on the means, and for a claim that
    /// one arm beats the other ([`Rule::Above`], or [`Rule::AtLeast`] with a margin >= 0) the
    /// margin must also clear the spread: every seed of the method beats every seed of the
    /// baseline (`min m > max b + margin`), else [`Verdict::WithinNoise`]. A non-inferiority
    /// claim (`AtLeast` with a negative margin: "at most this much worse") and the other rules
    /// judge the means.
    pub fn judge_seeds(self, baseline: Option<Spread>, method: Option<Spread>) -> Verdict {
        let v = self.judge(baseline.map(|b| b.mean), method.map(|m| m.mean), None);
        match (self, baseline, method) {
            (Rule::Above(x), Some(b), Some(m)) if v == Verdict::Holds && m.min <= b.max + x => Verdict::WithinNoise,
            (Rule::AtLeast(x), Some(b), Some(m)) if x >= 0.0 && v == Verdict::Holds && m.min < b.max + x => {
                Verdict::WithinNoise
            }
            _ => v,
        }
    }

    /// [`Rule::judge_seeds`] in words for a note: "holds on every seed", "within noise" or "does
    /// not hold".
    pub fn describe_seeds(self, baseline: &[f64], method: &[f64]) -> &'static str {
        match self.judge_seeds(Spread::of(baseline), Spread::of(method)) {
            Verdict::Holds => "holds on every seed",
            Verdict::WithinNoise => "within noise",
            _ => "does not hold",
        }
    }

    /// The verdict that `arms` (figures per seed) are in descending order: each adjacent pair by
    /// [`Rule::Above`]`(0)` over seeds; any pair that fails fails the order, else any pair
    /// within noise makes it [`Verdict::WithinNoise`].
    pub fn order_seeds(arms: &[&[f64]]) -> Verdict {
        let pairs: Vec<Verdict> =
            arms.windows(2).map(|w| Rule::Above(0.0).judge_seeds(Spread::of(w[1]), Spread::of(w[0]))).collect();
        if pairs.iter().any(|v| *v == Verdict::Fails || *v == Verdict::Missing) {
            Verdict::Fails
        } else if pairs.contains(&Verdict::WithinNoise) {
            Verdict::WithinNoise
        } else {
            Verdict::Holds
        }
    }
}

/// How a row's figures print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Format {
    /// With the report's decimals.
    #[default]
    Decimal,
    /// As integers with thousands separators (FLOPs, parameters).
    Count,
}

/// One row of a report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportRow {
    /// What was measured (`top-1 (%)`, `PSNR-Y x2 (dB)`).
    pub setting: String,
    /// The baseline's figure.
    pub baseline: Option<f64>,
    /// Our method's figure.
    pub method: Option<f64>,
    /// The paper's figure, where one exists.
    pub paper: Option<f64>,
    /// The claim this row tests, in words (`-` for a recorded figure).
    pub claim: String,
    /// Whether it held.
    pub verdict: Verdict,
    /// How the figures print.
    #[serde(default)]
    pub format: Format,
    /// The baseline's spread over seeds (its figure is the mean).
    #[serde(default)]
    pub baseline_spread: Option<Spread>,
    /// The method's spread over seeds.
    #[serde(default)]
    pub method_spread: Option<Spread>,
}

impl ReportRow {
    /// A recorded figure that tests no claim.
    pub fn info(
        setting: impl Into<String>,
        baseline: Option<f64>,
        method: Option<f64>,
        note: impl Into<String>,
    ) -> Self {
        Self {
            setting: setting.into(),
            baseline,
            method,
            paper: None,
            claim: note.into(),
            verdict: Verdict::Info,
            format: Format::Decimal,
            baseline_spread: None,
            method_spread: None,
        }
    }

    /// A recorded figure per seed of each arm: the means, with their spreads.
    pub fn info_seeds(setting: impl Into<String>, baseline: &[f64], method: &[f64], note: impl Into<String>) -> Self {
        let (b, m) = (Spread::of(baseline), Spread::of(method));
        Self { baseline_spread: b, method_spread: m, ..Self::info(setting, b.map(|x| x.mean), m.map(|x| x.mean), note) }
    }

    /// A claim on two arms' figures per seed ([`Rule::judge_seeds`]): the means print, with
    /// their spreads, and a margin inside the spread is [`Verdict::WithinNoise`].
    pub fn claim_seeds(
        setting: impl Into<String>,
        baseline: &[f64],
        method: &[f64],
        claim: impl Into<String>,
        rule: Rule,
    ) -> Self {
        let (b, m) = (Spread::of(baseline), Spread::of(method));
        Self {
            verdict: rule.judge_seeds(b, m),
            baseline_spread: b,
            method_spread: m,
            ..Self::claim(setting, b.map(|x| x.mean), m.map(|x| x.mean), claim, rule)
        }
    }

    /// A claim whose verdict `rule` computes from the figures.
    pub fn claim(
        setting: impl Into<String>,
        baseline: Option<f64>,
        method: Option<f64>,
        claim: impl Into<String>,
        rule: Rule,
    ) -> Self {
        Self {
            setting: setting.into(),
            baseline,
            method,
            paper: None,
            claim: claim.into(),
            verdict: rule.judge(baseline, method, None),
            format: Format::Decimal,
            baseline_spread: None,
            method_spread: None,
        }
    }

    /// A claim against the paper's figure `paper`: the verdict of `rule` on the row's figures with
    /// it (an info row keeps [`Verdict::Info`]).
    pub fn against_paper(mut self, paper: Option<f64>, rule: Option<Rule>) -> Self {
        self.paper = paper;
        if let Some(rule) = rule {
            self.verdict = rule.judge(self.baseline, self.method, paper);
        }
        self
    }

    /// The same row with the verdict `v` (computed from more than its two figures, e.g.
    /// [`Rule::order_seeds`]).
    pub fn with_verdict(mut self, v: Verdict) -> Self {
        self.verdict = v;
        self
    }

    /// Prints the figures as integer counts with thousands separators.
    pub fn counts(mut self) -> Self {
        self.format = Format::Count;
        self
    }

    /// `method - baseline` where there is a baseline, else `method - paper` (marked so), with
    /// `decimals` digits.
    pub fn delta(&self, decimals: usize) -> String {
        let d = match (self.method, self.baseline, self.paper) {
            (Some(m), Some(b), _) => (m - b, ""),
            (Some(m), None, Some(p)) => (m - p, " vs paper"),
            _ => return "-".into(),
        };
        format!("{}{}", self.figure(d.0, decimals, true), d.1)
    }

    /// One figure of this row as it prints.
    pub fn figure(&self, x: f64, decimals: usize, signed: bool) -> String {
        match self.format {
            Format::Count if x.is_finite() => {
                let sign = if x < 0.0 {
                    "-"
                } else if signed {
                    "+"
                } else {
                    ""
                };
                format!("{sign}{}", thousands(x.abs().round() as u128))
            }
            _ if signed => format!("{x:+.decimals$}"),
            _ => format!("{x:.decimals$}"),
        }
    }
}

/// `1088202` as `1,088,202`.
pub fn thousands(n: u128) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn default_decimals() -> usize {
    2
}

/// A run's report: a title, the command and profile that produced it, its seeds, the rows, and
/// Markdown notes printed after the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Title (`ResNet-20 on mnist-5k, dense baseline`).
    pub title: String,
    /// The command that reproduces it.
    pub command: String,
    /// The profile (`mini`, `smoke`, `paper`; a baseline's `full`).
    #[serde(default)]
    pub profile: String,
    /// The seeds it used.
    #[serde(default)]
    pub seeds: Vec<u64>,
    /// Digits after the point (PSNR margins of hundredths of a dB need 3).
    #[serde(default = "default_decimals")]
    pub decimals: usize,
    /// The rows.
    pub rows: Vec<ReportRow>,
    /// Markdown after the table (per-seed figures, settings).
    #[serde(default)]
    pub notes: String,
}

impl Report {
    /// A report with two decimals and no notes.
    pub fn new(title: impl Into<String>, command: impl Into<String>, profile: &str, seeds: &[u64]) -> Self {
        Self {
            title: title.into(),
            command: command.into(),
            profile: profile.into(),
            seeds: seeds.to_vec(),
            decimals: 2,
            rows: Vec::new(),
            notes: String::new(),
        }
    }

    /// With `rows`.
    pub fn rows(mut self, rows: Vec<ReportRow>) -> Self {
        self.rows = rows;
        self
    }

    /// Printing with `decimals` digits.
    pub fn decimals(mut self, decimals: usize) -> Self {
        self.decimals = decimals;
        self
    }

    /// With Markdown `notes` after the table.
    pub fn notes(mut self, notes: impl Into<String>) -> Self {
        self.notes = notes.into();
        self
    }

    /// `(claims that hold, claims judged or missing)`: info rows are not claims.
    pub fn claims(&self) -> (usize, usize) {
        let judged = self.rows.iter().filter(|r| r.verdict != Verdict::Info);
        let total = judged.clone().count();
        (judged.filter(|r| r.verdict == Verdict::Holds).count(), total)
    }

    /// The report as Markdown: title, command, profile and seeds, the table, the notes.
    pub fn markdown(&self) -> String {
        let d = self.decimals;
        let mut s = format!("# {}\n\nCommand: `{}`", self.title, self.command);
        if !self.profile.is_empty() {
            s += &format!(" (profile {}", self.profile);
            if !self.seeds.is_empty() {
                let seeds: Vec<String> = self.seeds.iter().map(u64::to_string).collect();
                s += &format!(", seeds {}", seeds.join(", "));
            }
            s += ")";
        }
        s += "\n\n| setting | baseline | method | paper | delta | claim | verdict |\n| --- | --- | --- | --- | --- | --- | --- |\n";
        for r in &self.rows {
            let f = |v: Option<f64>| v.map(|x| r.figure(x, d, false)).unwrap_or_else(|| "-".into());
            // A figure over several seeds prints as `mean (min-max)`.
            let g = |v: Option<f64>, sp: Option<Spread>| match sp {
                Some(sp) if sp.n > 1 => {
                    format!("{} ({}-{})", f(v), r.figure(sp.min, d, false), r.figure(sp.max, d, false))
                }
                _ => f(v),
            };
            let verdict = match r.verdict {
                Verdict::WithinNoise => "Within noise".to_string(),
                v => format!("{v:?}"),
            };
            s += &format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                r.setting,
                g(r.baseline, r.baseline_spread),
                g(r.method, r.method_spread),
                f(r.paper),
                r.delta(d),
                r.claim,
                verdict
            );
        }
        s + &self.notes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_judge_their_figures_and_missing_figures_are_missing() {
        assert_eq!(Rule::Above(0.0).judge(Some(1.0), Some(1.0), None), Verdict::Fails);
        assert_eq!(Rule::AtLeast(0.0).judge(Some(1.0), Some(1.0), None), Verdict::Holds);
        assert_eq!(Rule::AtLeast(0.1).judge(Some(1.0), Some(1.05), None), Verdict::Fails);
        assert_eq!(Rule::Within(1.0).judge(Some(2.0), Some(1.0), None), Verdict::Holds);
        assert_eq!(Rule::Within(0.5).judge(Some(2.0), Some(1.0), None), Verdict::Fails);
        assert_eq!(Rule::PaperAtLeast(-0.5).judge(None, Some(91.6), Some(92.0)), Verdict::Holds);
        assert_eq!(Rule::PaperWithin(0.005).judge(None, Some(91.99), Some(92.0)), Verdict::Fails);
        assert_eq!(Rule::Above(0.0).judge(None, Some(1.0), None), Verdict::Missing);
        assert_eq!(Rule::PaperWithin(1.0).judge(Some(1.0), None, Some(1.0)), Verdict::Missing);
        assert_eq!(Rule::Holds(false).judge(None, None, None), Verdict::Fails);
    }

    #[test]
    fn a_margin_inside_the_seed_spread_is_within_noise() {
        let b = [89.0, 91.0, 93.0];
        // Means 91 vs 94: holds on the means, but seed 0 of the method (92) is below seed 2 of
        // the baseline (93).
        let r = ReportRow::claim_seeds("top-1", &b, &[92.0, 95.0, 95.0], "m beats b", Rule::Above(0.0));
        assert_eq!((r.baseline, r.method, r.verdict), (Some(91.0), Some(94.0), Verdict::WithinNoise));
        let r = ReportRow::claim_seeds("top-1", &b, &[93.5, 95.0, 96.0], "m beats b", Rule::Above(0.0));
        assert_eq!(r.verdict, Verdict::Holds);
        let r = ReportRow::claim_seeds("top-1", &b, &[93.5, 95.0, 96.0], "by 1 pp", Rule::Above(1.0));
        assert_eq!(r.verdict, Verdict::WithinNoise, "93.5 does not clear 93 + 1");
        assert_eq!(ReportRow::claim_seeds("t", &b, &[80.0, 85.0, 90.0], "c", Rule::Above(0.0)).verdict, Verdict::Fails);
        assert_eq!(Rule::AtLeast(0.0).judge_seeds(Spread::of(&[1.0, 2.0]), Spread::of(&[2.0, 3.0])), Verdict::Holds);
        // Non-inferiority and equality claims judge the means.
        assert_eq!(Rule::AtLeast(-0.5).judge_seeds(Spread::of(&[1.0, 3.0]), Spread::of(&[1.0, 2.4])), Verdict::Holds);
        assert_eq!(Rule::order_seeds(&[&[3.0, 4.0], &[2.0, 2.5], &[1.0, 1.5]]), Verdict::Holds);
        assert_eq!(Rule::order_seeds(&[&[3.0, 4.0], &[2.0, 3.5], &[1.0, 1.5]]), Verdict::WithinNoise);
        assert_eq!(Rule::order_seeds(&[&[3.0, 4.0], &[1.0, 1.5], &[2.0, 2.5]]), Verdict::Fails);
        assert_eq!(
            ReportRow::claim_seeds("t", &b, &[90.0, 91.5, 92.0], "c", Rule::Within(1.0)).verdict,
            Verdict::Holds
        );
        assert_eq!(ReportRow::claim_seeds("t", &[], &[1.0], "c", Rule::Above(0.0)).verdict, Verdict::Missing);
        let md = Report::new("t", "c", "mini", &[0, 1, 2]).rows(vec![r]).markdown();
        assert!(md.contains("| top-1 | 91.00 (89.00-93.00) | 94.83 (93.50-96.00) |"), "{md}");
        let r2 = ReportRow::claim_seeds("x", &b, &[92.0, 95.0, 95.0], "c", Rule::Above(0.0));
        let rep = Report::new("t", "c", "mini", &[0]).rows(vec![r2]);
        assert!(rep.markdown().contains("| Within noise |"));
        assert_eq!(rep.claims(), (0, 1));
        let one = ReportRow::info_seeds("y", &[1.0], &[2.0], "-");
        assert!(Report::new("t", "c", "m", &[0]).rows(vec![one]).markdown().contains("| y | 1.00 | 2.00 |"));
    }

    #[test]
    fn counts_print_as_integers_with_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_088_202), "1,088,202");
        let r = ReportRow::info("FLOPs", Some(1_088_202.0), Some(102_714.0), "-").counts();
        assert_eq!(r.delta(2), "-985,488");
        let md = Report::new("t", "c", "mini", &[3, 4]).rows(vec![r]).markdown();
        assert!(md.contains("| FLOPs | 1,088,202 | 102,714 | - | -985,488 | - | Info |"), "{md}");
        assert!(md.contains("(profile mini, seeds 3, 4)"), "{md}");
    }

    #[test]
    fn decimals_and_notes_come_from_the_report() {
        let row = ReportRow::claim("PSNR", Some(32.1654), Some(32.3651), "c", Rule::AtLeast(0.03));
        assert_eq!(row.verdict, Verdict::Holds);
        let r = Report::new("t", "c", "mini", &[0]).rows(vec![row]).decimals(3).notes("\nper seed\n");
        let md = r.markdown();
        assert!(md.contains("| PSNR | 32.165 | 32.365 | - | +0.200 | c | Holds |"), "{md}");
        assert!(md.ends_with("\nper seed\n"), "{md}");
        assert_eq!(r.claims(), (1, 1));
        let old = r#"{"title":"t","command":"c","rows":[{"setting":"s","baseline":null,"method":1.0,"paper":null,"claim":"-","verdict":"Info"}]}"#;
        let parsed: Report = serde_json::from_str(old).expect("a report written before these fields");
        assert_eq!((parsed.decimals, parsed.rows[0].format), (2, Format::Decimal));
    }
}
