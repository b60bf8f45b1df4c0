//! Per-layer pruning rates as the official code of HRank, DCFF and CLR-RNF takes them: a Python
//! list expression passed as `--cprate`, e.g. `[0.5]*2+[0.4]*2+([0.7]*7+[0.45]*9)*2+[0.0]`.

use crate::error::{PruneError, Result, config_err};

/// Parses a rate list: lists `[a, b, ...]`, repetition `x*n` (or `n*x`), concatenation `+` and
/// parentheses. Every rate must lie in `[0, 1)`.
pub fn parse_cprate(expr: &str) -> Result<Vec<f64>> {
    parse_cprate_at_most(expr, MAX_RATES)
}

/// The most rates a list may expand to without a network to compare with.
pub const MAX_RATES: usize = 4096;

/// Parenthesised groups nest at most this deep.
pub const MAX_DEPTH: usize = 32;

/// [`parse_cprate`] for a network of `layers` prunable layers: a list that expands to more rates
/// is an error before anything is allocated (`[0.5]*999999999999` fails at once), repeat
/// products are checked, and nesting is bounded by [`MAX_DEPTH`].
pub fn parse_cprate_at_most(expr: &str, layers: usize) -> Result<Vec<f64>> {
    let mut p = Parser { s: expr.as_bytes(), i: 0, expr, limit: layers, depth: 0 };
    let v = p.sum()?;
    p.skip_ws();
    if p.i != p.s.len() {
        return Err(p.err("unexpected trailing input"));
    }
    if let Some(bad) = v.iter().find(|r| !(0.0..1.0).contains(*r)) {
        return Err(config_err(format!("rate {bad} in {expr:?} is not in [0, 1)")));
    }
    Ok(v)
}

/// Filters kept by rate `r` out of `c`: `int(c * (1 - r))`, the f64 product truncated as the
/// official Python code does (`int(64 * (1 - 0.7)) = 19`). A layer keeps at least one filter.
pub fn kept_filters(c: usize, rate: f64) -> Result<usize> {
    if !(0.0..1.0).contains(&rate) {
        return Err(config_err(format!("pruning rate {rate} is not in [0, 1)")));
    }
    Ok(((c as f64 * (1.0 - rate)) as usize).max(1))
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    expr: &'a str,
    /// The most rates any part may expand to.
    limit: usize,
    /// Open parentheses.
    depth: usize,
}

enum Value {
    List(Vec<f64>),
    Int(usize),
}

impl Parser<'_> {
    fn err(&self, msg: &str) -> PruneError {
        PruneError::Parse { expr: self.expr.to_string(), at: self.i, msg: msg.to_string() }
    }

    fn too_long(&self, n: usize) -> PruneError {
        let n = if n == usize::MAX { "more than memory holds".to_string() } else { n.to_string() };
        self.err(&format!("the list expands to {n} rates, more than the {} layers it is for", self.limit))
    }

    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.i).copied()
    }

    fn sum(&mut self) -> Result<Vec<f64>> {
        let mut out = self.list_term()?;
        while self.peek() == Some(b'+') {
            self.i += 1;
            let more = self.list_term()?;
            if out.len() + more.len() > self.limit {
                return Err(self.too_long(out.len() + more.len()));
            }
            out.extend(more);
        }
        Ok(out)
    }

    /// A product of atoms: exactly one list and any number of integer repeat counts.
    fn list_term(&mut self) -> Result<Vec<f64>> {
        let mut list: Option<Vec<f64>> = None;
        let mut repeat = 1usize;
        loop {
            match self.atom()? {
                Value::List(l) if list.is_none() => list = Some(l),
                Value::List(_) => return Err(self.err("cannot multiply two lists")),
                Value::Int(n) => repeat = repeat.checked_mul(n).ok_or_else(|| self.too_long(usize::MAX))?,
            }
            if self.peek() == Some(b'*') {
                self.i += 1;
            } else {
                break;
            }
        }
        let list = list.ok_or_else(|| self.err("a term needs a list"))?;
        match list.len().checked_mul(repeat) {
            Some(n) if n <= self.limit => Ok(std::iter::repeat_n(list, repeat).flatten().collect()),
            n => Err(self.too_long(n.unwrap_or(usize::MAX))),
        }
    }

    fn atom(&mut self) -> Result<Value> {
        match self.peek() {
            Some(b'[') => {
                self.i += 1;
                let mut v = Vec::new();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Value::List(v));
                }
                loop {
                    v.push(self.number()?);
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Value::List(v));
                        }
                        _ => return Err(self.err("expected ',' or ']'")),
                    }
                }
            }
            Some(b'(') => {
                if self.depth == MAX_DEPTH {
                    return Err(self.err(&format!("parentheses nest deeper than {MAX_DEPTH}")));
                }
                self.i += 1;
                self.depth += 1;
                let v = self.sum()?;
                self.depth -= 1;
                if self.peek() != Some(b')') {
                    return Err(self.err("expected ')'"));
                }
                self.i += 1;
                Ok(Value::List(v))
            }
            Some(c) if c.is_ascii_digit() => {
                let x = self.number()?;
                if x.fract() != 0.0 || x < 0.0 {
                    return Err(self.err("a repeat count must be a whole number"));
                }
                Ok(Value::Int(x as usize))
            }
            _ => Err(self.err("expected '[', '(' or a number")),
        }
    }

    fn number(&mut self) -> Result<f64> {
        self.skip_ws();
        let start = self.i;
        while self.i < self.s.len() && matches!(self.s[self.i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'-') {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i]).ok().and_then(|t| t.parse::<f64>().ok()).ok_or_else(|| {
            PruneError::Parse { expr: self.expr.to_string(), at: start, msg: "expected a number".into() }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_official_forms() {
        assert_eq!(parse_cprate("[0.5]*2+[0.4]").unwrap(), vec![0.5, 0.5, 0.4]);
        assert_eq!(parse_cprate("([0.1]*2+[0.2])*2 + [0.0]").unwrap(), vec![0.1, 0.1, 0.2, 0.1, 0.1, 0.2, 0.0]);
        assert_eq!(parse_cprate("[0.1, 0.2]*2").unwrap(), vec![0.1, 0.2, 0.1, 0.2]);
        assert_eq!(parse_cprate("2*[0.3]").unwrap(), vec![0.3, 0.3]);
        let resnet56 = "[0.7]*2+[0.5]*3+[0.3]*2+[0.4]+[0.8]+ [0.7]*2+[0.8]*4+[0.4]+[0.2]*2+[0.7]+[0.3]+[0.8]+\
                        [0.4]*2+[0.7]+[0.3]+[0.4]+[0.8]+ [0.0]*3";
        assert_eq!(parse_cprate(resnet56).unwrap().len(), 30);
    }

    #[test]
    fn rejects_bad_lists() {
        for bad in ["", "[0.5", "[0.5]*", "[0.5]*[0.5]", "[1.0]", "[-0.1]", "[0.5]*2.5", "[0.5] x", "[a]"] {
            assert!(parse_cprate(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn hostile_lists_fail_fast_without_allocating() {
        let e = parse_cprate("[0.5]*999999999999").expect_err("too long");
        assert!(e.to_string().contains("999999999999 rates"), "{e}");
        // 2^32 * 2^32 wraps to 0 in unchecked arithmetic: an empty list.
        assert!(parse_cprate("[0.5]*4294967296*4294967296").is_err());
        assert!(parse_cprate("[0.5]*4294967296*4294967296*0").is_err());
        let deep = format!("{}[0.5]{}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(parse_cprate(&deep).expect_err("deep").to_string().contains("nest deeper"));
        let ok = format!("{}[0.5]{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert_eq!(parse_cprate(&ok).expect("32 deep"), vec![0.5]);
        // Bounded by the network: ResNet-56's 30 rates fit 30 layers, not 29.
        assert_eq!(parse_cprate_at_most("[0.5]*30", 30).expect("fits").len(), 30);
        assert!(parse_cprate_at_most("[0.5]*30", 29).is_err());
        assert!(parse_cprate_at_most("[0.5]*20+[0.1]*10", 29).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]
        #[test]
        fn arbitrary_strings_never_panic(s in "[\\[\\]()*+,.0-9e -]{0,60}") {
            if let Ok(v) = parse_cprate(&s) {
                proptest::prop_assert!(v.len() <= MAX_RATES);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)) {
            let _ = parse_cprate(&String::from_utf8_lossy(&b));
        }
    }

    #[test]
    fn kept_filters_truncates_like_python() {
        assert_eq!(kept_filters(64, 0.7).unwrap(), 19);
        assert_eq!(kept_filters(64, 0.8).unwrap(), 12);
        assert_eq!(kept_filters(512, 0.85).unwrap(), 76);
        assert_eq!(kept_filters(256, 0.35).unwrap(), 166);
        assert_eq!(kept_filters(4, 0.9).unwrap(), 1);
        assert!(kept_filters(4, 1.0).is_err());
    }
}
