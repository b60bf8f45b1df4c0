//! Per-layer pruning rates as the official code of HRank, DCFF and CLR-RNF takes them: a Python
//! list expression passed as `--cprate`, e.g. `[0.5]*2+[0.4]*2+([0.7]*7+[0.45]*9)*2+[0.0]`.

use crate::error::{PruneError, Result, config_err};

/// Parses a rate list: lists `[a, b, ...]`, repetition `x*n` (or `n*x`), concatenation `+` and
/// parentheses. Every rate must lie in `[0, 1)`.
pub fn parse_cprate(expr: &str) -> Result<Vec<f64>> {
    let mut p = Parser { s: expr.as_bytes(), i: 0, expr };
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
}

enum Value {
    List(Vec<f64>),
    Int(usize),
}

impl Parser<'_> {
    fn err(&self, msg: &str) -> PruneError {
        PruneError::Parse { expr: self.expr.to_string(), at: self.i, msg: msg.to_string() }
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
            out.extend(self.list_term()?);
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
                Value::Int(n) => repeat *= n,
            }
            if self.peek() == Some(b'*') {
                self.i += 1;
            } else {
                break;
            }
        }
        let list = list.ok_or_else(|| self.err("a term needs a list"))?;
        Ok(std::iter::repeat_n(list, repeat).flatten().collect())
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
                self.i += 1;
                let v = self.sum()?;
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
    fn kept_filters_truncates_like_python() {
        assert_eq!(kept_filters(64, 0.7).unwrap(), 19);
        assert_eq!(kept_filters(64, 0.8).unwrap(), 12);
        assert_eq!(kept_filters(512, 0.85).unwrap(), 76);
        assert_eq!(kept_filters(256, 0.35).unwrap(), 166);
        assert_eq!(kept_filters(4, 0.9).unwrap(), 1);
        assert!(kept_filters(4, 1.0).is_err());
    }
}
