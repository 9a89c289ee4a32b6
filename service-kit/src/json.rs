//! The one rule for JSON that clients send and Herald stores, applied once at the edge.
//!
//! Request bodies end up in the event store as `jsonb`, and are read back by serde_json
//! (to load an aggregate, to project, to show a timeline). A value that serde_json accepts
//! but jsonb refuses fails the write; a value that jsonb accepts but gives back in a form
//! serde_json reads differently (or cannot read) breaks every later read of the message.
//! So every client-supplied JSON value is checked here, before any command is built:
//!
//! * **Syntax, strictly:** valid UTF-8 JSON (serde_json already refuses lone surrogates
//!   and invalid escapes), no key twice in one object (a repeated key is a 400, as a
//!   repeated query parameter is; the "last one wins" of plain serde_json would silently
//!   drop data), at most [`MAX_DEPTH`] levels of nesting (serde_json reads at most 128,
//!   and the stored event wraps the body in a few levels of its own).
//! * **Storable strings:** no U+0000 in any string or object key: jsonb refuses it, and in
//!   a shared transaction one refused row would fail every command grouped with it.
//! * **Storable numbers:** jsonb keeps a number as an exact decimal and gives it back in
//!   plain notation (`1e21` comes back as `1000000000000000000000`); the number must read
//!   back as the same value. [`survives_jsonb`] checks it by computing jsonb's rendering.
//!
//! A violation names the field, with a dotted path into the body (`content.variables.x`,
//! `commands[3].message.content.body`).

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Deepest nesting of arrays and objects accepted in a request body.
pub const MAX_DEPTH: usize = 32;

/// Why a body is not acceptable JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not JSON at all (or not UTF-8, or a lone surrogate escape).
    #[error("{0}")]
    Malformed(String),
    /// Valid JSON that breaks one of the rules above, at `field`.
    #[error("{field}: {message}")]
    Violation {
        /// Dotted path of the offending value (`""` for the whole body).
        field: String,
        /// Stable machine-readable code.
        code: &'static str,
        /// What is wrong and what would be accepted.
        message: String,
    },
}

impl JsonError {
    fn violation(field: String, code: &'static str, message: impl Into<String>) -> Self {
        Self::Violation {
            field,
            code,
            message: message.into(),
        }
    }
}

/// Parses `bytes` strictly (see the module header) into a value; the storage rule is not
/// applied (see [`check_storable`]).
pub fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    let sink = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = Node {
        path: &Path::Root,
        depth: 0,
        sink: &sink,
    };
    let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match (parsed, sink.into_inner()) {
        (_, Some(violation)) => Err(violation),
        (Ok(v), None) => Ok(v),
        (Err(e), None) => Err(JsonError::Malformed(e.to_string())),
    }
}

/// Parses a body that must be a JSON object.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, JsonError> {
    match parse(bytes)? {
        Value::Object(map) => Ok(map),
        other => Err(JsonError::violation(
            String::new(),
            "invalid_body",
            format!("the body must be a JSON object, not {}", kind(&other)),
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Checks that every string, key and number in `value` can be stored as jsonb and read
/// back unchanged. `base` prefixes the reported field (`""` for a whole body).
pub fn check_storable(value: &Value, base: &str) -> Result<(), JsonError> {
    let mut path = base.to_string();
    walk(value, &mut path)
}

fn walk(value: &Value, path: &mut String) -> Result<(), JsonError> {
    match value {
        Value::String(s) => string_ok(s, path),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && !survives_jsonb(f) => Err(JsonError::violation(
                path.clone(),
                "unsupported_number",
                format!(
                    "{path}: the number {f} cannot be stored exactly (it would read back as \
                     another value); send it as a string"
                ),
            )),
            _ => Ok(()),
        },
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Object(map) => {
            for (k, v) in map {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                string_ok(k, path)?;
                walk(v, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Null | Value::Bool(_) => Ok(()),
    }
}

fn string_ok(s: &str, path: &str) -> Result<(), JsonError> {
    if s.contains('\0') {
        return Err(JsonError::violation(
            path.to_string(),
            "unsupported_character",
            format!("{path}: contains U+0000 (NUL), which Herald cannot store"),
        ));
    }
    Ok(())
}

/// Whether `v` reads back as the same value after jsonb stored it: jsonb keeps the exact
/// decimal of the text serde_json writes and renders it in plain notation, which serde_json
/// then parses.
pub fn survives_jsonb(v: f64) -> bool {
    if !v.is_finite() {
        return false;
    }
    let written = serde_json::to_string(&v).unwrap_or_default();
    let Some(stored) = jsonb_rendering(&written) else {
        return false;
    };
    serde_json::from_str::<f64>(&stored).is_ok_and(|back| back == v)
}

/// How PostgreSQL renders the JSON number `text` after storing it as jsonb: the exact
/// decimal in plain notation, keeping as many fraction digits as the input had after
/// applying its exponent (`1.50` → `1.50`, `1.5e-1` → `0.15`, `100e-2` → `1.00`,
/// `1e21` → `1` and 21 zeros), and no sign on zero. `None` when `text` is not a number.
pub fn jsonb_rendering(text: &str) -> Option<String> {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = format!("{int}{frac}");
    // The decimal point sits after `point` digits of `digits` (possibly outside them).
    let point = int.len() as i64 + exponent;
    let scale = (frac.len() as i64 - exponent).max(0) as usize;
    let n = digits.len() as i64;
    let int_part: String = if point <= 0 {
        "0".to_string()
    } else if point >= n {
        format!("{digits}{}", "0".repeat((point - n) as usize))
    } else {
        digits[..point as usize].to_string()
    };
    let int_part = match int_part.trim_start_matches('0') {
        "" => "0".to_string(),
        trimmed => trimmed.to_string(),
    };
    // Every digit right of the point is kept, trailing zeros included: that is the
    // numeric's scale, `max(0, fraction digits - exponent)`.
    let frac_part: String = if point >= n {
        String::new()
    } else if point < 0 {
        format!("{}{digits}", "0".repeat((-point) as usize))
    } else {
        digits[point as usize..].to_string()
    };
    debug_assert_eq!(frac_part.len(), scale);
    let zero = int_part == "0" && frac_part.bytes().all(|b| b == b'0');
    let sign = if negative && !zero { "-" } else { "" };
    Some(if frac_part.is_empty() {
        format!("{sign}{int_part}")
    } else {
        format!("{sign}{int_part}.{frac_part}")
    })
}

/// Where a value sits in the body, for messages.
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(parent, key) => {
                if matches!(parent, Path::Root) {
                    write!(f, "{key}")
                } else {
                    write!(f, "{parent}.{key}")
                }
            }
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// Deserializes one value, refusing duplicate keys and excessive depth. A violation is
/// recorded in `sink` (serde errors carry no structure) and parsing stops.
struct Node<'a> {
    path: &'a Path<'a>,
    depth: usize,
    sink: &'a RefCell<Option<JsonError>>,
}

impl Node<'_> {
    fn stop<E: serde::de::Error>(&self, field: String, code: &'static str, message: String) -> E {
        *self.sink.borrow_mut() = Some(JsonError::violation(field, code, message));
        E::custom("refused")
    }

    fn deeper<E: serde::de::Error>(&self) -> Result<usize, E> {
        let depth = self.depth + 1;
        if depth > MAX_DEPTH {
            let field = self.path.to_string();
            let message = format!("nested deeper than {MAX_DEPTH} levels");
            return Err(self.stop(field, "too_deep", message));
        }
        Ok(depth)
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let depth = self.deeper()?;
        let mut items = Vec::new();
        loop {
            let path = Path::Index(self.path, items.len());
            let seed = Node {
                path: &path,
                depth,
                sink: self.sink,
            };
            match seq.next_element_seed(seed)? {
                Some(v) => items.push(v),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let depth = self.deeper()?;
        let mut out = Map::new();
        let mut seen: HashSet<String> = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                let field = Path::Key(self.path, &key).to_string();
                let message = format!("{field}: the key is given more than once");
                return Err(self.stop(field, "duplicate_key", message));
            }
            let path = Path::Key(self.path, &key);
            let value = map.next_value_seed(Node {
                path: &path,
                depth,
                sink: self.sink,
            })?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violation(r: Result<impl fmt::Debug, JsonError>) -> (String, &'static str) {
        match r {
            Err(JsonError::Violation { field, code, .. }) => (field, code),
            other => panic!("expected a violation, got {other:?}"),
        }
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth_with_their_path() {
        assert_eq!(
            violation(parse(br#"{"bucket":"hour","bucket":"day"}"#)),
            ("bucket".into(), "duplicate_key")
        );
        assert_eq!(
            violation(parse(br#"{"a":[{"x":1},{"x":1,"x":2}]}"#)),
            ("a[1].x".into(), "duplicate_key")
        );
        assert!(parse(br#"{"a":{"x":1},"b":{"x":1}}"#).is_ok());
    }

    #[test]
    fn depth_is_bounded() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(ok.as_bytes()).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(violation(parse(deep.as_bytes())).1, "too_deep");
        // Far deeper than serde_json's own limit: still our violation, no stack trouble.
        let huge = format!("{}{}", "{\"a\":".repeat(5000), "}".repeat(5000));
        assert_eq!(violation(parse(huge.as_bytes())).1, "too_deep");
    }

    #[test]
    fn syntax_errors_are_malformed_and_bodies_must_be_objects() {
        for bad in [&b"{"[..], b"{\"a\":\"\\ud800\"}", b"[1] x", b"\xff", b""] {
            assert!(
                matches!(parse(bad), Err(JsonError::Malformed(_))),
                "{bad:?}"
            );
        }
        for not_object in [&b"[]"[..], b"null", b"\"x\"", b"3"] {
            assert_eq!(
                violation(parse_object(not_object)),
                (String::new(), "invalid_body")
            );
        }
    }

    #[test]
    fn nul_is_refused_in_strings_and_keys() {
        let v = parse(br#"{"content":{"variables":{"k\u0000":"v"}}}"#).unwrap();
        assert_eq!(
            violation(check_storable(&v, "")),
            ("content.variables.k\0".into(), "unsupported_character")
        );
        let v = parse(br#"{"a":["x","y\u0000"]}"#).unwrap();
        assert_eq!(
            violation(check_storable(&v, "commands[2]")),
            ("commands[2].a[1]".into(), "unsupported_character")
        );
        let v = parse(br#"{"a":"\u0001 and \u00e9 are fine"}"#).unwrap();
        assert!(check_storable(&v, "").is_ok());
    }

    #[test]
    fn jsonb_renders_numbers_in_plain_notation() {
        // Each pair was read off PostgreSQL 15: SELECT '<input>'::jsonb::text.
        for (input, pg) in [
            ("-0.0", "0.0"),
            ("1E+2", "100"),
            ("1.0e1", "10"),
            ("123.456e-2", "1.23456"),
            ("1.5e-1", "0.15"),
            ("-1.25e3", "-1250"),
            ("0.1e0", "0.1"),
            ("100e-2", "1.00"),
            ("1.50", "1.50"),
            ("1e-7", "0.0000001"),
            ("0", "0"),
            ("-7", "-7"),
        ] {
            assert_eq!(jsonb_rendering(input).as_deref(), Some(pg), "{input}");
        }
        assert_eq!(
            jsonb_rendering("1.7976931348623157e+308").unwrap(),
            format!("17976931348623157{}", "0".repeat(292))
        );
        assert_eq!(jsonb_rendering("abc"), None);
    }

    #[test]
    fn every_finite_double_survives_with_correctly_rounded_parsing() {
        for v in [
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            5e-324,
            1e21,
            0.1,
            -0.0,
            123456789012345680.0,
            std::f64::consts::PI,
        ] {
            assert!(survives_jsonb(v), "{v}");
        }
        assert!(!survives_jsonb(f64::INFINITY));
        assert!(!survives_jsonb(f64::NAN));
    }
}
