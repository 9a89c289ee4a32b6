//! The latency sketch: logarithmic bins with a relative accuracy of 1% (DDSketch).
//!
//! A positive value `v` (milliseconds) falls into bin `ceil(ln v / ln γ)` with
//! `γ = (1 + α) / (1 - α)`, `α = 0.01`; the bin's representative value
//! `2 γ^i / (γ + 1)` is within `α` (relative) of every value in the bin. Zero gets its own
//! bin, [`ZERO_BIN`]. Bins are plain counters, so sketches merge by adding counts per bin:
//! in SQL, `SUM(samples) GROUP BY bin` over `herald_sketch_bins(submit_sketch)` of any rollup rows.
//! Stored, a sketch is a few bytes a bin ([`encode`]).
//!
//! A percentile `q` is the representative of the bin holding the nearest-rank sample
//! (rank `ceil(q n)`, 1-based, in ascending order): the exact percentile lies in that bin, so
//! the estimate is within 1% of it (the requirement is 2%).

/// Relative accuracy.
pub const ALPHA: f64 = 0.01;

/// The bin of zero (and of any value below 1 ms, which integer milliseconds never are).
pub const ZERO_BIN: i32 = i32::MIN;

fn gamma() -> f64 {
    (1.0 + ALPHA) / (1.0 - ALPHA)
}

/// The bin of a latency in milliseconds (negative values count as zero).
pub fn bin_of(value_ms: i64) -> i32 {
    if value_ms <= 0 {
        return ZERO_BIN;
    }
    ((value_ms as f64).ln() / gamma().ln()).ceil() as i32
}

/// The representative value of a bin, in milliseconds.
pub fn value_of(bin: i32) -> f64 {
    if bin == ZERO_BIN {
        return 0.0;
    }
    let g = gamma();
    2.0 * g.powi(bin) / (g + 1.0)
}

/// The `q` quantile (0 < q <= 1) of a sketch given as `(bin, count)` pairs in any order,
/// possibly with repeated bins (a merge of several rows). `None` when empty.
pub fn quantile(bins: &[(i32, i64)], q: f64) -> Option<f64> {
    let mut sorted: Vec<(i32, i64)> = bins.iter().copied().filter(|(_, c)| *c > 0).collect();
    sorted.sort_unstable_by_key(|(b, _)| *b);
    let total: i64 = sorted.iter().map(|(_, c)| c).sum();
    if total == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as i64).max(1);
    let mut seen = 0;
    for (bin, count) in sorted {
        seen += count;
        if seen >= rank {
            return Some(value_of(bin));
        }
    }
    None
}

/// The stored bin of zero ([`ZERO_BIN`] in memory): the smallest `int2`, so that stored
/// bins ascend as the bins they stand for do.
pub const STORED_ZERO_BIN: i16 = i16::MIN;

/// The widths a stored sketch's counts may have, in bytes.
pub const COUNT_WIDTHS: [usize; 4] = [1, 2, 4, 8];

/// Why a sketch was refused, stored or to be stored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SketchError {
    /// The first byte is not one of [`COUNT_WIDTHS`].
    #[error("a stored sketch's count width is {0}, not 1, 2, 4 or 8")]
    Width(u8),
    /// After the width, the length is not a whole number of records.
    #[error("a stored sketch of {len} bytes is not a whole number of {record}-byte bins after its width byte")]
    Length {
        /// The sketch's length in bytes.
        len: usize,
        /// The length of one record at its width.
        record: usize,
    },
    /// Bins must ascend strictly: a merge relies on it.
    #[error("a stored sketch's bins do not ascend at bin {0}")]
    Order(i32),
    /// A bin no latency falls into: only [`ZERO_BIN`] and `0..=i16::MAX` are stored.
    #[error("bin {0} is no latency's bin and cannot be stored")]
    Bin(i32),
}

/// The stored `int2` of a bin.
fn stored_bin(bin: i32) -> Result<i16, SketchError> {
    if bin == ZERO_BIN {
        return Ok(STORED_ZERO_BIN);
    }
    match i16::try_from(bin) {
        Ok(stored) if stored >= 0 => Ok(stored),
        _ => Err(SketchError::Bin(bin)),
    }
}

/// The smallest of [`COUNT_WIDTHS`] holding `count` as a signed big-endian integer.
fn width_of(count: i64) -> usize {
    // The magnitude in the sign's complement: -128 needs one byte, as 127 does.
    let magnitude = if count < 0 { !count } else { count };
    match magnitude {
        0..=0x7f => 1,
        0x80..=0x7fff => 2,
        0x8000..=0x7fff_ffff => 4,
        _ => 8,
    }
}

/// Appends the stored form of `pairs` (bins ascending, each [`ZERO_BIN`] or a bin
/// [`bin_of`] gives; zero counts are left out) to `out`.
///
/// The layout, for readers in any language: nothing at all for a sketch without samples;
/// otherwise one byte `w`, the width of every count (1, 2, 4 or 8, the smallest that holds
/// them all), then for each bin, ascending, the bin as a big-endian `int2` ([`ZERO_BIN`]
/// as `-32768`) and its samples as a big-endian two's-complement integer of `w` bytes.
/// A week of 15-minute rows holds a few hundred samples per bin at most, so a bin takes
/// 3 bytes, and a row with both sketches stays well under the size at which PostgreSQL
/// would compress it or move it out of line.
pub fn encode(pairs: &[(i32, i64)], out: &mut Vec<u8>) -> Result<(), SketchError> {
    // Checked whole before anything is written, so a refusal leaves `out` as it was.
    let (mut width, mut bins, mut last) = (0, 0, None);
    for &(bin, samples) in pairs.iter().filter(|(_, n)| *n != 0) {
        if last.is_some_and(|l| l >= bin) {
            return Err(SketchError::Order(bin));
        }
        stored_bin(bin)?;
        last = Some(bin);
        width = width.max(width_of(samples));
        bins += 1;
    }
    if bins == 0 {
        return Ok(());
    }
    out.reserve(1 + bins * (2 + width));
    out.push(width as u8);
    for &(bin, samples) in pairs.iter().filter(|(_, n)| *n != 0) {
        let stored = stored_bin(bin)?;
        out.extend_from_slice(&stored.to_be_bytes());
        out.extend_from_slice(&samples.to_be_bytes()[8 - width..]);
    }
    Ok(())
}

/// The stored form of `pairs` (see [`encode`]).
pub fn encoded(pairs: &[(i32, i64)]) -> Result<Vec<u8>, SketchError> {
    let mut out = Vec::new();
    encode(pairs, &mut out)?;
    Ok(out)
}

/// Replaces `out` with the `(bin, samples)` pairs of stored sketch `bytes` (the layout of
/// [`encode`]), checking the width, that the records are whole and that bins ascend.
pub fn decode_into(bytes: &[u8], out: &mut Vec<(i32, i64)>) -> Result<(), SketchError> {
    out.clear();
    let Some((&width, records)) = bytes.split_first() else {
        return Ok(());
    };
    let w = usize::from(width);
    if !COUNT_WIDTHS.contains(&w) {
        return Err(SketchError::Width(width));
    }
    let record = 2 + w;
    if !records.len().is_multiple_of(record) {
        return Err(SketchError::Length {
            len: bytes.len(),
            record,
        });
    }
    out.reserve(records.len() / record);
    // One loop per width, so that each reads records of a size known when compiled: this
    // decoding runs for every bin of every row a statistics answer reads.
    match w {
        1 => decode_records::<1>(records, out),
        2 => decode_records::<2>(records, out),
        4 => decode_records::<4>(records, out),
        _ => decode_records::<8>(records, out),
    }
}

/// Appends the records of width `W` in `records` (a whole number of them) to `out`.
fn decode_records<const W: usize>(
    records: &[u8],
    out: &mut Vec<(i32, i64)>,
) -> Result<(), SketchError> {
    let mut last = None;
    for r in records.chunks_exact(2 + W) {
        let stored = i16::from_be_bytes([r[0], r[1]]);
        let bin = if stored == STORED_ZERO_BIN {
            ZERO_BIN
        } else {
            i32::from(stored)
        };
        if last.is_some_and(|l| l >= bin) {
            return Err(SketchError::Order(bin));
        }
        last = Some(bin);
        // The count's bytes at the top of a word, then an arithmetic shift sign-extends it.
        let mut word = [0u8; 8];
        word[..W].copy_from_slice(&r[2..2 + W]);
        let samples = i64::from_be_bytes(word) >> (64 - 8 * W);
        out.push((bin, samples));
    }
    Ok(())
}

/// The pairs of stored sketch `bytes` (see [`decode_into`]).
pub fn decode(bytes: &[u8]) -> Result<Vec<(i32, i64)>, SketchError> {
    let mut out = Vec::new();
    decode_into(bytes, &mut out)?;
    Ok(out)
}

/// The sum of two sketches with ascending bins, bins whose samples cancel out left out.
pub fn add(a: &[(i32, i64)], b: &[(i32, i64)]) -> Vec<(i32, i64)> {
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let next = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                i += 1;
                j += 1;
                (x.0, x.1 + y.1)
            }
            (Some(x), Some(y)) if x.0 < y.0 => {
                i += 1;
                *x
            }
            (Some(x), None) => {
                i += 1;
                *x
            }
            (_, Some(y)) => {
                j += 1;
                *y
            }
            (None, None) => break,
        };
        if next.1 != 0 {
            out.push(next);
        }
    }
    out
}

/// The quantiles `qs` (ascending) of a sketch whose bins are ascending and distinct, as a
/// merged sketch of the query service is: the values [`quantile`] gives one by one, in one
/// pass and without copying or sorting the bins.
pub fn quantiles_of_sorted<const N: usize>(bins: &[(i32, i64)], qs: [f64; N]) -> [Option<f64>; N] {
    debug_assert!(
        bins.windows(2).all(|w| w[0].0 < w[1].0),
        "bins not ascending"
    );
    debug_assert!(
        qs.windows(2).all(|w| w[0] <= w[1]),
        "quantiles not ascending"
    );
    let mut out = [None; N];
    let total: i64 = bins.iter().map(|(_, c)| (*c).max(0)).sum();
    if total == 0 {
        return out;
    }
    let mut positive = bins.iter().filter(|(_, c)| *c > 0);
    let (mut seen, mut bin) = (0, None);
    for (slot, q) in out.iter_mut().zip(qs) {
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as i64).max(1);
        while seen < rank {
            match positive.next() {
                Some((b, c)) => {
                    seen += c;
                    bin = Some(*b);
                }
                None => break,
            }
        }
        *slot = bin.filter(|_| seen >= rank).map(value_of);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic random numbers without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn exact(sorted: &[i64], q: f64) -> f64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
        sorted[rank - 1] as f64
    }

    fn sketch(values: &[i64]) -> Vec<(i32, i64)> {
        let mut map = std::collections::BTreeMap::new();
        for v in values {
            *map.entry(bin_of(*v)).or_insert(0i64) += 1;
        }
        map.into_iter().collect()
    }

    /// Bin boundaries computed apart from this code (60-digit decimal arithmetic of
    /// `ceil(ln v / ln γ)`): the pairs straddle `γ^k` for several k, so an off-by-one in the
    /// rounding, a different α or a log base mix-up moves at least one of them.
    #[test]
    fn bins_match_hand_computed_boundaries() {
        for (ms, bin) in [
            (-5, ZERO_BIN),
            (0, ZERO_BIN),
            (1, 0),
            (2, 35),
            (7, 98),
            (8, 104),
            (22_033, 500),
            (22_034, 501),
            (3_600_000, 755),
            (65_699_379, 900),
            (65_699_380, 901),
        ] {
            assert_eq!(bin_of(ms), bin, "{ms} ms");
        }
        // 2 γ^231 / (γ + 1), the representative of the bin holding 100 ms.
        assert!((value_of(231) - 100.494_567_708_567).abs() < 1e-9);
    }

    #[test]
    fn every_value_is_within_one_percent_of_its_bin_representative() {
        for v in (1..20_000).chain([86_400_000, 604_800_000, i64::from(i32::MAX)]) {
            let r = value_of(bin_of(v));
            assert!(
                ((r - v as f64) / v as f64).abs() <= ALPHA + 1e-9,
                "{v} -> {r}"
            );
        }
        assert_eq!(bin_of(0), ZERO_BIN);
        assert_eq!(value_of(ZERO_BIN), 0.0);
    }

    #[test]
    fn percentiles_are_within_two_percent_of_exact_on_random_data() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..40 {
            let n = 50 + (rng.next() % 5_000) as usize;
            // Log-uniform over 1 ms .. ~3 h, with some zeros and a heavy tail.
            let mut values: Vec<i64> = (0..n)
                .map(|_| {
                    let u = rng.unit();
                    if u < 0.02 {
                        0
                    } else {
                        (10f64.powf(rng.unit() * 7.0)).round() as i64
                    }
                })
                .collect();
            let bins = sketch(&values);
            values.sort_unstable();
            for q in [0.5, 0.95, 0.99] {
                let want = exact(&values, q);
                let got = quantile(&bins, q).unwrap();
                let err = if want == 0.0 {
                    got
                } else {
                    ((got - want) / want).abs()
                };
                assert!(
                    err <= 0.02,
                    "round {round} q {q}: exact {want}, sketch {got}"
                );
            }
        }
    }

    #[test]
    fn merged_sketches_answer_like_one_sketch_of_all_values() {
        let mut rng = Rng(42);
        let a: Vec<i64> = (0..3_000).map(|_| (rng.next() % 10_000) as i64).collect();
        let b: Vec<i64> = (0..500)
            .map(|_| 50_000 + (rng.next() % 1_000) as i64)
            .collect();
        let mut merged = sketch(&a);
        merged.extend(sketch(&b));
        let mut all: Vec<i64> = a.iter().chain(&b).copied().collect();
        let whole = sketch(&all);
        all.sort_unstable();
        for q in [0.5, 0.95, 0.99] {
            assert_eq!(quantile(&merged, q), quantile(&whole, q));
            let want = exact(&all, q);
            let got = quantile(&merged, q).unwrap();
            assert!(
                ((got - want) / want).abs() <= 0.02,
                "q {q}: {want} vs {got}"
            );
        }
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn stored_sketches_round_trip_and_refuse_what_is_not_one() {
        let pairs = vec![(ZERO_BIN, 3), (0, 1), (231, -2), (900, 127)];
        let mut with_zero = pairs.clone();
        with_zero.push((901, 0));
        let bytes = encoded(&with_zero).unwrap();
        assert_eq!(
            bytes.len(),
            1 + 4 * 3,
            "one-byte counts; the zero count is left out"
        );
        // What `'\x01'::bytea || int2send((-32768)::int2) || substring(int8send(3) FROM 8)`
        // gives in SQL.
        assert_eq!(&bytes[..4], b"\x01\x80\0\x03");
        assert_eq!(decode(&bytes), Ok(pairs.clone()));
        assert_eq!(
            decode(&bytes[..5]),
            Err(SketchError::Length { len: 5, record: 3 })
        );
        assert_eq!(decode(&[3, 0, 1, 2]), Err(SketchError::Width(3)));
        let mut swapped = vec![1];
        swapped.extend_from_slice(&bytes[4..7]);
        swapped.extend_from_slice(&bytes[1..4]);
        assert_eq!(decode(&swapped), Err(SketchError::Order(ZERO_BIN)));
        assert_eq!(decode(&[]), Ok(vec![]));
        assert_eq!(encoded(&[(5, 0)]), Ok(vec![]), "no samples, no bytes");
        assert_eq!(encoded(&[(7, 1), (7, 1)]), Err(SketchError::Order(7)));
        assert_eq!(encoded(&[(-1, 1)]), Err(SketchError::Bin(-1)));
        assert_eq!(encoded(&[(40_000, 1)]), Err(SketchError::Bin(40_000)));
    }

    #[test]
    fn counts_take_the_narrowest_width_that_holds_them_all() {
        for (counts, width) in [
            (vec![1, 127, -128], 1),
            (vec![128, 1], 2),
            (vec![-129], 2),
            (vec![32_767, -32_768], 2),
            (vec![32_768], 4),
            (vec![i64::from(i32::MIN)], 4),
            (vec![i64::from(i32::MAX) + 1], 8),
            (vec![i64::MIN, i64::MAX], 8),
        ] {
            let pairs: Vec<(i32, i64)> = counts
                .iter()
                .enumerate()
                .map(|(i, n)| (i as i32 * 7, *n))
                .collect();
            let bytes = encoded(&pairs).unwrap();
            assert_eq!(bytes[0] as usize, width, "{counts:?}");
            assert_eq!(bytes.len(), 1 + pairs.len() * (2 + width), "{counts:?}");
            assert_eq!(decode(&bytes), Ok(pairs), "{counts:?}");
        }
    }

    #[test]
    fn every_latency_has_a_bin_that_can_be_stored() {
        for v in [0, 1, 1_000, 3_600_000, i64::from(i32::MAX), i64::MAX] {
            assert!(stored_bin(bin_of(v)).is_ok(), "{v} ms");
        }
        assert!(bin_of(i64::MAX) < i32::from(i16::MAX));
    }

    #[test]
    fn adding_sketches_sums_bins_and_drops_those_that_cancel() {
        let a = [(1, 2), (5, 1), (9, 4)];
        let b = [(0, 1), (5, -1), (9, 1), (12, 7)];
        assert_eq!(add(&a, &b), vec![(0, 1), (1, 2), (9, 5), (12, 7)]);
        assert_eq!(add(&b, &a), add(&a, &b));
        assert_eq!(add(&[], &a), a.to_vec());
        assert_eq!(add(&a, &[]), a.to_vec());
    }

    #[test]
    fn quantiles_of_a_sorted_sketch_are_those_of_quantile() {
        let mut rng = Rng(7);
        for n in [0usize, 1, 2, 3, 10, 999] {
            let values: Vec<i64> = (0..n).map(|_| (rng.next() % 100_000) as i64).collect();
            let mut bins = sketch(&values);
            // A merged sketch can hold a bin whose samples cancelled out.
            bins.push((i32::MAX, 0));
            let qs = [0.0, 0.5, 0.95, 0.99, 1.0];
            let want = qs.map(|q| quantile(&bins, q));
            assert_eq!(quantiles_of_sorted(&bins, qs), want, "{n} values");
            if n > 0 {
                assert!(want.iter().all(Option::is_some));
            }
        }
    }
}
