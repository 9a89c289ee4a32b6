//! A parser of the Prometheus text exposition format (version 0.0.4), strict enough that a
//! malformed `/metrics` answer fails the test that reads it: `# HELP` and `# TYPE` lines,
//! samples with escaped label values, `+Inf`/`-Inf`/`NaN`, optional timestamps, and every
//! sample belonging to a family declared by a `# TYPE` line before it.
//!
//! Written here rather than taken from a crate: the format is small, and the parsers on
//! the crate registry are either unmaintained or pull in a regex engine for it.

use std::collections::{BTreeMap, HashMap};

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's name (`x_bucket`, `x_sum`, ... for histograms).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    /// Every sample, in order.
    pub samples: Vec<Sample>,
    /// Family name to type (`counter`, `gauge`, `histogram`, `summary`, `untyped`).
    pub types: HashMap<String, String>,
    /// Family name to help text.
    pub help: HashMap<String, String>,
}

impl Exposition {
    /// The sum of the samples called `name` whose labels include all of `labels` (0 when
    /// none match, as a counter that has not moved yet).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// The samples called `name` whose labels include all of `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The type declared for family `name`.
    pub fn type_of(&self, name: &str) -> Option<&str> {
        self.types.get(name).map(String::as_str)
    }
}

/// Parses `text`, or says which line is wrong and why.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    for (i, line) in text.lines().enumerate() {
        let fail = |why: &str| format!("line {}: {why}: {line:?}", i + 1);
        let line = line.trim_end();
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim_start();
            if let Some(rest) = comment.strip_prefix("HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                check_name(name).map_err(|e| fail(&e))?;
                out.help.insert(name.to_string(), help.to_string());
            } else if let Some(rest) = comment.strip_prefix("TYPE ") {
                let (name, kind) = rest
                    .split_once(' ')
                    .ok_or_else(|| fail("TYPE without a type"))?;
                check_name(name).map_err(|e| fail(&e))?;
                if !matches!(
                    kind,
                    "counter" | "gauge" | "histogram" | "summary" | "untyped"
                ) {
                    return Err(fail("unknown type"));
                }
                if out
                    .types
                    .insert(name.to_string(), kind.to_string())
                    .is_some()
                {
                    return Err(fail("second TYPE line for one family"));
                }
            }
            continue;
        }
        let sample = parse_sample(line).map_err(|e| fail(&e))?;
        let family = family_of(&sample.name, &out.types)
            .ok_or_else(|| fail("sample of a family without a TYPE line"))?;
        if out.type_of(family) == Some("counter") && sample.value < 0.0 {
            return Err(fail("negative counter"));
        }
        out.samples.push(sample);
    }
    Ok(out)
}

fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if matches!(
                types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            ) {
                return Some(base);
            }
        }
    }
    None
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if ok {
        Ok(())
    } else {
        Err(format!("bad metric name {name:?}"))
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let end;
        loop {
            // Skip separators.
            while let Some((_, c)) = chars.peek() {
                if *c == ',' || *c == ' ' {
                    chars.next();
                } else {
                    break;
                }
            }
            let Some(&(start, c)) = chars.peek() else {
                return Err("unterminated label set".into());
            };
            if c == '}' {
                end = start + 1;
                break;
            }
            let mut key_end = start;
            while let Some(&(j, c)) = chars.peek() {
                if c == '=' {
                    break;
                }
                key_end = j + c.len_utf8();
                chars.next();
            }
            let key = &after[start..key_end];
            check_name(key).map_err(|_| format!("bad label name {key:?}"))?;
            if chars.next().map(|(_, c)| c) != Some('=') {
                return Err("label without =".into());
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("label value not quoted".into());
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    None => return Err("unterminated label value".into()),
                    Some((_, '"')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        _ => return Err("bad escape in label value".into()),
                    },
                    Some((_, c)) => value.push(c),
                }
            }
            if labels.insert(key.to_string(), value).is_some() {
                return Err(format!("label {key:?} twice"));
            }
        }
        rest = &after[end..];
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if fields.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_counters_histograms_and_escapes() {
        let text = r#"# HELP a_total A counter.
# TYPE a_total counter
a_total{kind="x",msg="say \"hi\"\\n"} 3
a_total{kind="y"} 1e3
# TYPE h histogram
h_bucket{le="0.5"} 1
h_bucket{le="+Inf"} 2
h_sum 0.75
h_count 2 1700000000000
"#;
        let e = parse(text).unwrap();
        assert_eq!(e.sum("a_total", &[]), 1003.0);
        assert_eq!(e.sum("a_total", &[("kind", "x")]), 3.0);
        assert_eq!(
            e.samples[0].labels["msg"], "say \"hi\"\\n",
            "escapes are decoded"
        );
        assert_eq!(e.sum("h_bucket", &[("le", "+Inf")]), 2.0);
        assert_eq!(e.type_of("h"), Some("histogram"));
        assert_eq!(e.help["a_total"], "A counter.");
        assert_eq!(e.sum("missing", &[]), 0.0);
    }

    #[test]
    fn refuses_malformed_text() {
        for bad in [
            "x 1",                                    // no TYPE
            "# TYPE x counter\nx{a=\"1\" 1",          // unterminated
            "# TYPE x counter\nx{a=1} 1",             // unquoted
            "# TYPE x counter\nx one",                // bad value
            "# TYPE x counter\nx -1",                 // negative counter
            "# TYPE x wibble\nx 1",                   // bad type
            "# TYPE x counter\n9x 1",                 // bad name
            "# TYPE x counter\nx{a=\"1\",a=\"2\"} 1", // duplicate label
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
