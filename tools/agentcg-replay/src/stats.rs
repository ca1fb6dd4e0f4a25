// SPDX-License-Identifier: GPL-2.0-only
//! Quantiles.

/// Quantile `q` (0..=1) of sorted data, interpolating linearly between the
/// two nearest ranks (position `q * (n - 1)`). None for no data.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() || !q.is_finite() {
        return None;
    }
    let q = q.clamp(0.0, 1.0);
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

/// Sort a copy (NaNs dropped) and take quantile `q`.
pub fn quantile(data: &[f64], q: f64) -> Option<f64> {
    let s = sorted(data);
    quantile_sorted(&s, q)
}

pub fn sorted(data: &[f64]) -> Vec<f64> {
    let mut s: Vec<f64> = data.iter().copied().filter(|x| !x.is_nan()).collect();
    s.sort_by(f64::total_cmp);
    s
}

/// The 101 percentiles 0, 1, ..., 100 of the data (min .. max); empty for no
/// data.
pub fn percentiles(data: &[f64]) -> Vec<f64> {
    let s = sorted(data);
    if s.is_empty() {
        return Vec::new();
    }
    (0..=100)
        .map(|k| quantile_sorted(&s, k as f64 / 100.0).unwrap())
        .collect()
}

/// Median and interquartile range (q1, q3).
pub fn median_iqr(data: &[f64]) -> Option<(f64, f64, f64)> {
    let s = sorted(data);
    Some((
        quantile_sorted(&s, 0.5)?,
        quantile_sorted(&s, 0.25)?,
        quantile_sorted(&s, 0.75)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[7.0], 0.99), Some(7.0));
        let d: Vec<f64> = (1..=5).map(f64::from).collect();
        assert_eq!(quantile(&d, 0.5), Some(3.0));
        assert_eq!(quantile(&d, 0.25), Some(2.0));
        assert_eq!(quantile(&d, 0.0), Some(1.0));
        assert_eq!(quantile(&d, 1.0), Some(5.0));
        assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 0.5), Some(2.5));
        // 1..=1000: p99 at position 989.01 -> 990.01.
        let d: Vec<f64> = (1..=1000).rev().map(f64::from).collect();
        assert!((quantile(&d, 0.99).unwrap() - 990.01).abs() < 1e-9);
        assert_eq!(quantile(&[1.0, f64::NAN, 3.0], 0.5), Some(2.0));
        let p = percentiles(&d);
        assert_eq!(p.len(), 101);
        assert_eq!(p[0], 1.0);
        assert_eq!(p[100], 1000.0);
        assert!(p.windows(2).all(|w| w[0] <= w[1]));
        assert!(percentiles(&[]).is_empty());
        assert_eq!(
            median_iqr(&[1.0, 2.0, 3.0, 4.0, 5.0]),
            Some((3.0, 2.0, 4.0))
        );
    }
}

/// "median [min-max]" of the data with @digits decimals: the median alone
/// for a single value, "-" for none.
pub fn median_range(data: &[f64], digits: usize) -> String {
    let s = sorted(data);
    match (quantile_sorted(&s, 0.5), s.first(), s.last()) {
        (Some(m), Some(lo), Some(hi)) if s.len() > 1 => format!("{m:.digits$} [{lo:.digits$}-{hi:.digits$}]"),
        (Some(m), _, _) => format!("{m:.digits$}"),
        _ => "-".into(),
    }
}
