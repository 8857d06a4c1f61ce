//! Counter-based random search: every trial value is a pure function of
//! (seed, trial index, key), so any trial can be computed alone, in any order.
//!
//! ```text
//! d  = BLAKE2b-128(b"metalab.random.v1\0" + encode([seed, index, key]))
//! a  = u64 from d[0..8] (big-endian),  b = u64 from d[8..16] (big-endian)
//! u  = (a >> 11) * 2^-53               in [0, 1)
//! u2 = (b >> 11) * 2^-53               in [0, 1)
//! uniform(lo, hi)        clamp(lo + (hi - lo) * u, lo, hi)
//! loguniform(lo, hi)     clamp(exp(ln(lo) + (ln(hi) - ln(lo)) * u), lo, hi)
//! randint(lo, hi)        lo + floor(a * (hi - lo + 1) / 2^64)          (inclusive)
//! choice(n)              floor(a * n / 2^64)                           (option index)
//! normal(mu, sigma)      mu + sigma * (sqrt(-2 ln(1 - u)) * cos(2 pi u2))
//! loguniform_int(lo, hi) clamp(floor(exp(ln(lo) + (ln(hi + 1) - ln(lo)) * u)), lo, hi)
//! ```

use rayon::prelude::*;

use crate::encoding::{put_int, put_list_header, put_str, python_float_repr, quote_str};
use crate::fingerprint::Hasher;
use crate::grid::{check_range, resolve_index};
use crate::CoreError;

pub const RANDOM_DOMAIN: &[u8] = b"metalab.random.v1\0";
const TWO_POW_MINUS_53: f64 = 1.0 / 9007199254740992.0;

/// One dimension's distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dist {
    Uniform { lo: f64, hi: f64 },
    LogUniform { lo: f64, hi: f64 },
    RandInt { lo: i64, hi: i64 },
    Choice { n: u64 },
    Normal { mu: f64, sigma: f64 },
    LogUniformInt { lo: i64, hi: i64 },
}

/// Raw arguments of a dimension as given by the user.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arg {
    Int(i64),
    Float(f64),
}

/// A sampled value: float kinds give floats, integer kinds give ints.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sample {
    Float(f64),
    Int(i64),
}

pub const KINDS: &str = "'uniform', 'loguniform', 'randint', 'choice', 'normal', 'loguniform_int'";

fn arg_repr(a: &Arg) -> String {
    match a {
        Arg::Int(i) => i.to_string(),
        Arg::Float(f) => python_float_repr(*f),
    }
}

impl Dist {
    /// Validates `kind` and its arguments; messages name the key and the bad value.
    pub fn parse(key: &str, kind: &str, args: &[Arg]) -> Result<Dist, CoreError> {
        let err = |what: String| {
            CoreError::ParamSpec(format!(
                "random space {} ({}): {}",
                quote_str(key),
                kind,
                what
            ))
        };
        let shown = args.iter().map(arg_repr).collect::<Vec<_>>().join(", ");
        let want = |n: usize, names: &str| -> Result<(), CoreError> {
            if args.len() != n {
                return Err(err(format!(
                    "expected {} argument(s) ({}), got {} ({})",
                    n,
                    names,
                    args.len(),
                    shown
                )));
            }
            Ok(())
        };
        let float = |i: usize, name: &str| -> Result<f64, CoreError> {
            let x = match args[i] {
                Arg::Float(x) => x,
                Arg::Int(v) => v as f64,
            };
            if !x.is_finite() {
                return Err(err(format!(
                    "{} = {} is not finite: expected a finite number",
                    name,
                    python_float_repr(x)
                )));
            }
            Ok(x)
        };
        let int = |i: usize, name: &str| -> Result<i64, CoreError> {
            match args[i] {
                Arg::Int(v) => Ok(v),
                Arg::Float(x) => Err(err(format!(
                    "{} = {} is a float: expected an int",
                    name,
                    python_float_repr(x)
                ))),
            }
        };
        match kind {
            "uniform" | "loguniform" => {
                want(2, "lo, hi")?;
                let lo = float(0, "lo")?;
                let hi = float(1, "hi")?;
                if lo >= hi {
                    return Err(err(format!(
                        "bounds lo = {}, hi = {}: expected lo < hi",
                        arg_repr(&args[0]),
                        arg_repr(&args[1])
                    )));
                }
                if kind == "uniform" {
                    Ok(Dist::Uniform { lo, hi })
                } else {
                    if lo <= 0.0 {
                        return Err(err(format!(
                            "lo = {}: expected 0 < lo < hi",
                            arg_repr(&args[0])
                        )));
                    }
                    Ok(Dist::LogUniform { lo, hi })
                }
            }
            "randint" | "loguniform_int" => {
                want(2, "lo, hi")?;
                let lo = int(0, "lo")?;
                let hi = int(1, "hi")?;
                if lo > hi {
                    return Err(err(format!(
                        "bounds lo = {}, hi = {}: expected lo <= hi",
                        lo, hi
                    )));
                }
                if kind == "randint" {
                    Ok(Dist::RandInt { lo, hi })
                } else {
                    if lo < 1 {
                        return Err(err(format!("lo = {}: expected 1 <= lo <= hi", lo)));
                    }
                    Ok(Dist::LogUniformInt { lo, hi })
                }
            }
            "choice" => {
                want(1, "n_options")?;
                let n = int(0, "n_options")?;
                if n < 1 {
                    return Err(err(format!("n_options = {}: expected n_options >= 1", n)));
                }
                Ok(Dist::Choice { n: n as u64 })
            }
            "normal" => {
                want(2, "mu, sigma")?;
                let mu = float(0, "mu")?;
                let sigma = float(1, "sigma")?;
                if sigma <= 0.0 {
                    return Err(err(format!(
                        "sigma = {}: expected sigma > 0",
                        arg_repr(&args[1])
                    )));
                }
                Ok(Dist::Normal { mu, sigma })
            }
            _ => Err(CoreError::ParamSpec(format!(
                "random space {}: unknown kind {}: expected one of {}",
                quote_str(key),
                quote_str(kind),
                KINDS
            ))),
        }
    }

    /// Maps the 128-bit draw `(a, b)` to a value.
    pub fn sample(&self, a: u64, b: u64) -> Sample {
        let u = (a >> 11) as f64 * TWO_POW_MINUS_53;
        match *self {
            Dist::Uniform { lo, hi } => Sample::Float(clamp(lo + (hi - lo) * u, lo, hi)),
            Dist::LogUniform { lo, hi } => {
                let (l, h) = (lo.ln(), hi.ln());
                Sample::Float(clamp((l + (h - l) * u).exp(), lo, hi))
            }
            Dist::RandInt { lo, hi } => {
                let range = (hi as i128 - lo as i128 + 1) as u128;
                let off = ((a as u128 * range) >> 64) as i128;
                Sample::Int((lo as i128 + off) as i64)
            }
            Dist::Choice { n } => Sample::Int(((a as u128 * n as u128) >> 64) as i64),
            Dist::Normal { mu, sigma } => {
                let u2 = (b >> 11) as f64 * TWO_POW_MINUS_53;
                let z = (-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                Sample::Float(mu + sigma * z)
            }
            Dist::LogUniformInt { lo, hi } => {
                let l = (lo as f64).ln();
                let h = (hi as f64 + 1.0).ln();
                let f = (l + (h - l) * u).exp().floor();
                // f >= 1 here; saturate above i64 (a Python int would exceed hi too).
                let v = if f >= 9223372036854775808.0 {
                    i64::MAX
                } else {
                    f as i64
                };
                Sample::Int(v.clamp(lo, hi))
            }
        }
    }
}

/// `x` limited to `[lo, hi]` (rounding in the formulas can step just outside), written
/// with plain comparisons so the result is bit-exact with Python's
/// `lo if x < lo else hi if x > hi else x`.
fn clamp(x: f64, lo: f64, hi: f64) -> f64 {
    if x < lo {
        lo
    } else if x > hi {
        hi
    } else {
        x
    }
}

/// The 128-bit draw of (seed, index, key) as two big-endian u64 halves.
pub fn draw(seed: i64, index: u64, key: &str) -> (u64, u64) {
    let mut buf = Vec::with_capacity(32 + key.len());
    // A key too long for a u32 prefix was rejected when the space was built.
    put_list_header(&mut buf, 3).expect("3 fits u32");
    put_int(&mut buf, seed);
    put_int(&mut buf, index as i64);
    put_str(&mut buf, key).expect("key length checked at construction");
    let mut h = Hasher::<16>::new();
    h.update(RANDOM_DOMAIN).update(&buf);
    let d = h.finish();
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    a.copy_from_slice(&d[..8]);
    b.copy_from_slice(&d[8..]);
    (u64::from_be_bytes(a), u64::from_be_bytes(b))
}

/// A validated random-search space.
#[derive(Debug, Clone)]
pub struct RandomSpace {
    seed: i64,
    dims: Vec<(String, Dist)>,
    n_trials: u64,
}

impl RandomSpace {
    pub fn new(seed: i64, dims: Vec<(String, Dist)>, n_trials: i64) -> Result<Self, CoreError> {
        if n_trials <= 0 {
            return Err(CoreError::ParamSpec(format!(
                "n_trials = {}: expected n_trials > 0",
                n_trials
            )));
        }
        for (i, (k, _)) in dims.iter().enumerate() {
            if k.len() > u32::MAX as usize {
                return Err(CoreError::ParamSpec(format!(
                    "random space key of {} bytes: expected at most {} bytes",
                    k.len(),
                    u32::MAX
                )));
            }
            if dims[..i].iter().any(|(o, _)| o == k) {
                return Err(CoreError::ParamSpec(format!(
                    "random space key {} appears twice: expected distinct keys",
                    quote_str(k)
                )));
            }
        }
        Ok(RandomSpace {
            seed,
            dims,
            n_trials: n_trials as u64,
        })
    }

    pub fn len(&self) -> u64 {
        self.n_trials
    }

    /// Always false: `n_trials > 0` is enforced.
    pub fn is_empty(&self) -> bool {
        self.n_trials == 0
    }

    /// Resolves a possibly negative index; `Err` past either end.
    pub fn resolve(&self, index: i128) -> Result<u64, CoreError> {
        resolve_index("trial", self.n_trials, index)
    }

    pub fn check_range(&self, start: i128, stop: i128) -> Result<(u64, u64), CoreError> {
        check_range("trial", self.n_trials, start, stop)
    }

    /// Values of trial `index` (must be `< len`), in space order.
    pub fn trial(&self, index: u64) -> Vec<Sample> {
        self.dims
            .iter()
            .map(|(k, d)| {
                let (a, b) = draw(self.seed, index, k);
                d.sample(a, b)
            })
            .collect()
    }

    /// Trials `start..stop`, in parallel.
    pub fn trials(&self, start: u64, stop: u64) -> Vec<Vec<Sample>> {
        (start..stop)
            .into_par_iter()
            .map(|i| self.trial(i))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(kind: &str, args: &[Arg]) -> Result<Dist, CoreError> {
        Dist::parse("x", kind, args)
    }

    #[test]
    fn validation_messages_name_values() {
        use Arg::*;
        let msg = |r: Result<Dist, CoreError>| r.unwrap_err().to_string();
        assert!(msg(parse("uniform", &[Float(2.5), Float(1.0)])).contains("2.5"));
        assert!(msg(parse("uniform", &[Int(2), Int(1)])).contains("lo = 2, hi = 1"));
        assert!(msg(parse("loguniform", &[Float(0.0), Float(1.0)])).contains("lo = 0.0"));
        assert!(msg(parse("randint", &[Int(5), Int(4)])).contains("lo = 5"));
        assert!(msg(parse("randint", &[Float(0.5), Int(4)])).contains("0.5"));
        assert!(msg(parse("loguniform_int", &[Int(0), Int(4)])).contains("lo = 0"));
        assert!(msg(parse("choice", &[Int(0)])).contains("n_options = 0"));
        assert!(msg(parse("normal", &[Float(0.0), Float(-1.0)])).contains("-1.0"));
        assert!(msg(parse("normal", &[Float(f64::NAN), Float(1.0)])).contains("nan"));
        assert!(msg(parse("beta", &[])).contains("'beta'"));
        assert!(msg(parse("uniform", &[Float(1.0)])).contains("expected 2"));
        assert!(RandomSpace::new(0, vec![], 0)
            .unwrap_err()
            .to_string()
            .contains("n_trials = 0"));
    }

    #[test]
    fn samples_in_range() {
        let dims = vec![
            ("u".to_string(), Dist::Uniform { lo: -1.0, hi: 2.0 }),
            ("l".to_string(), Dist::LogUniform { lo: 1e-4, hi: 1.0 }),
            ("r".to_string(), Dist::RandInt { lo: -3, hi: 3 }),
            ("c".to_string(), Dist::Choice { n: 4 }),
            (
                "n".to_string(),
                Dist::Normal {
                    mu: 0.0,
                    sigma: 1.0,
                },
            ),
            ("q".to_string(), Dist::LogUniformInt { lo: 1, hi: 1000 }),
        ];
        let s = RandomSpace::new(7, dims, 500).unwrap();
        let mut seen_r = [false; 7];
        for t in s.trials(0, 500) {
            match t[..] {
                [Sample::Float(u), Sample::Float(l), Sample::Int(r), Sample::Int(c), Sample::Float(n), Sample::Int(q)] =>
                {
                    assert!((-1.0..2.0).contains(&u));
                    assert!((1e-4..=1.0).contains(&l));
                    assert!((-3..=3).contains(&r));
                    seen_r[(r + 3) as usize] = true;
                    assert!((0..4).contains(&c));
                    assert!(n.is_finite() && n.abs() < 10.0);
                    assert!((1..=1000).contains(&q));
                }
                _ => panic!("wrong sample types {t:?}"),
            }
        }
        assert!(seen_r.iter().all(|x| *x), "randint covers its range");
    }

    #[test]
    fn counter_based() {
        let dims = vec![("u".to_string(), Dist::Uniform { lo: 0.0, hi: 1.0 })];
        let s = RandomSpace::new(1, dims.clone(), 10).unwrap();
        let t = s.trials(0, 10);
        assert_eq!(s.trials(3, 5), t[3..5].to_vec());
        assert_eq!(s.trial(7), t[7]);
        let other = RandomSpace::new(2, dims, 10).unwrap();
        assert_ne!(other.trial(0), s.trial(0));
        assert_eq!(s.resolve(-1).unwrap(), 9);
        assert!(s.resolve(10).is_err());
    }

    #[test]
    fn golden_draw_and_exact_kinds() {
        // Same vectors as docs/run-identity.md and tests/test_core_random.py.
        assert_eq!(draw(42, 0, "lr"), (0xd3846a18f34cbaa8, 0x6ba1cf7d93013ce1));
        let dims = vec![
            ("dropout".to_string(), Dist::Uniform { lo: 0.0, hi: 0.5 }),
            ("layers".to_string(), Dist::RandInt { lo: 1, hi: 8 }),
            ("act".to_string(), Dist::Choice { n: 3 }),
        ];
        let s = RandomSpace::new(42, dims, 3).unwrap();
        assert_eq!(
            s.trials(0, 3),
            vec![
                vec![
                    Sample::Float(0.4467659394977371),
                    Sample::Int(1),
                    Sample::Int(2)
                ],
                vec![
                    Sample::Float(0.25188533766433197),
                    Sample::Int(8),
                    Sample::Int(0)
                ],
                vec![
                    Sample::Float(0.2827731254488711),
                    Sample::Int(4),
                    Sample::Int(2)
                ],
            ]
        );
    }

    #[test]
    fn int_extremes_do_not_overflow() {
        let d = Dist::RandInt {
            lo: i64::MIN,
            hi: i64::MAX,
        };
        assert_eq!(d.sample(0, 0), Sample::Int(i64::MIN));
        assert_eq!(d.sample(u64::MAX, 0), Sample::Int(i64::MAX));
        let q = Dist::LogUniformInt {
            lo: 1,
            hi: i64::MAX,
        };
        match q.sample(u64::MAX, 0) {
            Sample::Int(v) => assert!(v > 9_000_000_000_000_000_000),
            other => panic!("{other:?}"),
        }
        assert_eq!(q.sample(0, 0), Sample::Int(1));
        assert_eq!(Dist::Choice { n: 3 }.sample(u64::MAX, 0), Sample::Int(2));
    }
}
