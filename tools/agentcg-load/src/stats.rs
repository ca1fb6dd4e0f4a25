//! Small statistics helpers.

/// Nearest-rank percentile of an ascending-sorted slice: the smallest value
/// such that at least `p` percent of the samples are <= it. `p` in [0, 100].
/// Returns 0 for an empty slice.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let p = p.clamp(0.0, 100.0);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Arithmetic mean; 0 for an empty slice.
pub fn mean(v: &[u64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64
}

/// Nanoseconds to whole microseconds, rounded to nearest.
pub fn ns_to_us(ns: u64) -> u64 {
    (ns + 500) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 90.0), 90);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&v, 99.5), 100);
    }

    #[test]
    fn percentile_small_and_empty() {
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(percentile(&[7], 0.0), 7);
        assert_eq!(percentile(&[7], 99.0), 7);
        // 4 samples: p50 -> rank 2, p75 -> rank 3, p76 -> rank 4.
        let v = [10, 20, 30, 40];
        assert_eq!(percentile(&v, 50.0), 20);
        assert_eq!(percentile(&v, 75.0), 30);
        assert_eq!(percentile(&v, 76.0), 40);
        // Out-of-range p is clamped.
        assert_eq!(percentile(&v, 150.0), 40);
        assert_eq!(percentile(&v, -3.0), 10);
    }

    #[test]
    fn mean_and_rounding() {
        assert_eq!(mean(&[]), 0.0);
        assert_eq!(mean(&[1, 2, 3, 4]), 2.5);
        assert_eq!(ns_to_us(1499), 1);
        assert_eq!(ns_to_us(1500), 2);
        assert_eq!(ns_to_us(0), 0);
    }
}
