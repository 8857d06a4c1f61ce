//! Texts of the encoding and of its messages: a float's digits in the encoding, Python's
//! `repr` of a float and of a str.

/// Quotes a str the way Python's `repr` does for ordinary text: `'x'`, escaping `\` and `'`.
pub fn quote_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Python's `repr(float)` for messages: `0.1`, `1e-05`, `1e+16`, `nan`, `-inf`, `2.0`.
pub fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let sci = float_text(x);
    let (mant, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mant) = match mant.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mant),
    };
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let sign = if neg { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        let body = if exp < 0 {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        } else if exp + 1 >= n {
            format!("{}{}.0", digits, "0".repeat((exp + 1 - n) as usize))
        } else {
            let (a, b) = digits.split_at((exp + 1) as usize);
            format!("{}.{}", a, b)
        };
        format!("{}{}", sign, body)
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits.clone()
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{}{}e{}{:02}", sign, m, esign, exp.abs())
    }
}

/// The text of a finite float in the encoding, in Rust's `{:e}` layout (`1e0`, `1.5e-3`,
/// `-0e0`) with the digits of Python's `repr`: the shortest digits that round-trip, the
/// nearest to `x` among those, and exact ties broken towards an even last digit.
///
/// Rust's own `format!("{:e}")` breaks such ties upwards (`8796093022208.0625` gives
/// `...063e12` where Python gives `...062`), so the digits come from Ryu, which breaks
/// them to even like Python, and are re-laid out here.
pub fn float_text(x: f64) -> String {
    let mut buf = ryu::Buffer::new();
    let s = buf.format_finite(x);
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (mant, exp) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (s, 0),
    };
    let (int_part, frac_part) = mant.split_once('.').unwrap_or((mant, ""));
    let all: Vec<u8> = int_part.bytes().chain(frac_part.bytes()).collect();
    let lead = all.iter().take_while(|&&d| d == b'0').count();
    let digits = &all[lead..];
    let end = digits.len() - digits.iter().rev().take_while(|&&d| d == b'0').count();
    let digits = &digits[..end];
    let mut out = String::with_capacity(digits.len() + 8);
    if neg {
        out.push('-');
    }
    if digits.is_empty() {
        out.push_str("0e0");
        return out;
    }
    let point_exp = int_part.len() as i32 - 1 - lead as i32 + exp;
    out.push(digits[0] as char);
    if digits.len() > 1 {
        out.push('.');
        out.extend(digits[1..].iter().map(|&d| d as char));
    }
    out.push('e');
    out.push_str(&point_exp.to_string());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_texts() {
        assert_eq!(float_text(1.0), "1e0");
        assert_eq!(float_text(0.1), "1e-1");
        assert_eq!(float_text(-0.0), "-0e0");
        assert_eq!(float_text(0.0), "0e0");
        assert_eq!(float_text(1.5), "1.5e0");
        assert_eq!(float_text(123456.0), "1.23456e5");
        assert_eq!(float_text(5e-324), "5e-324");
        assert_eq!(float_text(f64::MAX), "1.7976931348623157e308");
        assert_eq!(float_text(1e-7), "1e-7");
        assert_eq!(float_text(1e22), "1e22");
        assert_eq!(float_text(100.0), "1e2");
        assert_eq!(float_text(0.00123), "1.23e-3");
        assert_eq!(float_text(-2.5e-300), "-2.5e-300");
        // An exact tie between two shortest candidates goes to the even digit (like
        // Python's repr), where `format!("{:e}")` would give "8.796093022208063e12".
        let tie = (1u64 << 43) as f64 + 0.0625;
        assert_eq!(float_text(tie), "8.796093022208062e12");
        for x in [
            0.1,
            1.0 / 3.0,
            123.456,
            6.02214076e23,
            5e-324,
            1e300,
            4.35e-5,
        ] {
            assert_eq!(float_text(x).parse::<f64>().unwrap(), x);
            assert_eq!(float_text(-x).parse::<f64>().unwrap(), -x);
        }
    }

    #[test]
    fn python_reprs() {
        assert_eq!(python_float_repr(1.0), "1.0");
        assert_eq!(python_float_repr(0.1), "0.1");
        assert_eq!(python_float_repr(1e-5), "1e-05");
        assert_eq!(python_float_repr(0.0001), "0.0001");
        assert_eq!(python_float_repr(1e16), "1e+16");
        assert_eq!(python_float_repr(1234.5), "1234.5");
        assert_eq!(python_float_repr(-2.5e-7), "-2.5e-07");
        assert_eq!(python_float_repr(1e15), "1000000000000000.0");
        assert_eq!(python_float_repr(-0.0), "-0.0");
        assert_eq!(python_float_repr(f64::NAN), "nan");
        assert_eq!(python_float_repr(f64::NEG_INFINITY), "-inf");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_str("a'b\\c"), "'a\\'b\\\\c'");
        assert_eq!(quote_str("x\ny"), "'x\\ny'");
    }
}
