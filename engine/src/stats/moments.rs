//! Numerically stable running moments. Sums of squares lose every digit when
//! values sit far from zero (a 1e8 offset leaves nothing of a variance of 1); the
//! Welford update and Chan's merge keep deviations from the running mean instead,
//! so partial aggregates from many threads combine exactly enough.

/// Count, mean and sum of squared deviations of one variable.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Moments {
    pub n: f64,
    pub mean: f64,
    pub m2: f64,
}

impl Moments {
    pub fn push(&mut self, x: f64) {
        self.n += 1.0;
        let delta = x - self.mean;
        self.mean += delta / self.n;
        self.m2 += delta * (x - self.mean);
    }

    /// Chan et al.'s parallel merge.
    pub fn merge(&self, other: &Moments) -> Moments {
        if self.n == 0.0 {
            return *other;
        }
        if other.n == 0.0 {
            return *self;
        }
        let n = self.n + other.n;
        let delta = other.mean - self.mean;
        Moments {
            n,
            mean: self.mean + delta * other.n / n,
            m2: self.m2 + other.m2 + delta * delta * self.n * other.n / n,
        }
    }

    /// Sample variance (n − 1 denominator); NaN below two observations.
    pub fn variance(&self) -> f64 {
        if self.n < 2.0 {
            f64::NAN
        } else {
            self.m2 / (self.n - 1.0)
        }
    }

    /// From count, sum and sum of squares (as summary tables store them).
    pub fn from_sums(n: f64, sum: f64, sum_squares: f64) -> Moments {
        let mean = if n > 0.0 { sum / n } else { 0.0 };
        Moments {
            n,
            mean,
            m2: (sum_squares - sum * mean).max(0.0),
        }
    }

    /// From count, mean and sample standard deviation.
    pub fn from_mean_sd(n: f64, mean: f64, sd: f64) -> Moments {
        Moments {
            n,
            mean,
            m2: sd * sd * (n - 1.0).max(0.0),
        }
    }
}

/// Moments of two variables and their co-moment: ratio metrics (numerator,
/// denominator) and CUPED (metric, pre-period covariate).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CoMoments {
    pub x: Moments,
    pub y: Moments,
    /// Sum of (x − mean x)(y − mean y).
    pub cxy: f64,
}

impl CoMoments {
    pub fn push(&mut self, x: f64, y: f64) {
        let dx = x - self.x.mean;
        self.x.push(x);
        self.y.push(y);
        self.cxy += dx * (y - self.y.mean);
    }

    pub fn merge(&self, other: &CoMoments) -> CoMoments {
        let n = self.x.n + other.x.n;
        let cxy = if n == 0.0 {
            0.0
        } else {
            self.cxy
                + other.cxy
                + (other.x.mean - self.x.mean) * (other.y.mean - self.y.mean) * self.x.n * other.x.n
                    / n
        };
        CoMoments {
            x: self.x.merge(&other.x),
            y: self.y.merge(&other.y),
            cxy,
        }
    }

    pub fn n(&self) -> f64 {
        self.x.n
    }

    /// Sample covariance (n − 1 denominator).
    pub fn covariance(&self) -> f64 {
        if self.x.n < 2.0 {
            f64::NAN
        } else {
            self.cxy / (self.x.n - 1.0)
        }
    }

    pub fn from_sums(
        n: f64,
        x_sum: f64,
        x_sum_squares: f64,
        y_sum: f64,
        y_sum_squares: f64,
        xy_sum: f64,
    ) -> CoMoments {
        let x = Moments::from_sums(n, x_sum, x_sum_squares);
        CoMoments {
            x,
            y: Moments::from_sums(n, y_sum, y_sum_squares),
            cxy: xy_sum - x_sum * if n > 0.0 { y_sum / n } else { 0.0 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_offsets_do_not_change_variances() {
        let values: Vec<f64> = (0..10_000).map(|i| f64::from(i % 7) - 3.0).collect();
        let mut plain = Moments::default();
        let mut shifted = Moments::default();
        for v in &values {
            plain.push(*v);
            shifted.push(v + 1e8);
        }
        assert!((plain.variance() - shifted.variance()).abs() < 1e-9 * plain.variance());
        // Merging halves gives the same as one pass.
        let (mut a, mut b) = (Moments::default(), Moments::default());
        for (i, v) in values.iter().enumerate() {
            if i % 3 == 0 {
                a.push(v + 1e8)
            } else {
                b.push(v + 1e8)
            }
        }
        let merged = a.merge(&b);
        assert!((merged.variance() - shifted.variance()).abs() < 1e-9 * plain.variance());
        assert!((merged.mean - shifted.mean).abs() < 1e-6);
    }

    #[test]
    fn co_moments_merge_and_sums_agree() {
        let pairs: Vec<(f64, f64)> = (0..1000)
            .map(|i| {
                (
                    f64::from(i % 13),
                    f64::from((i * 7) % 11) + 0.5 * f64::from(i % 13),
                )
            })
            .collect();
        let mut all = CoMoments::default();
        let (mut a, mut b) = (CoMoments::default(), CoMoments::default());
        let (mut sx, mut sy, mut sxx, mut syy, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (i, (x, y)) in pairs.iter().enumerate() {
            all.push(*x, *y);
            if i % 2 == 0 {
                a.push(*x, *y)
            } else {
                b.push(*x, *y)
            }
            sx += x;
            sy += y;
            sxx += x * x;
            syy += y * y;
            sxy += x * y;
        }
        let merged = a.merge(&b);
        let from_sums = CoMoments::from_sums(1000.0, sx, sxx, sy, syy, sxy);
        for other in [merged, from_sums] {
            assert!((other.covariance() - all.covariance()).abs() < 1e-9 * all.covariance().abs());
            assert!((other.y.variance() - all.y.variance()).abs() < 1e-9 * all.y.variance());
        }
    }
}
