//! Kubernetes resource quantities (`100m`, `2`, `128Mi`, `1G`, `1e3`) as integers: CPU in
//! millicores, everything else in base units (bytes, counts).

/// Parses a quantity into thousandths of its unit (so `100m` → 100, `2` → 2000,
/// `1Ki` → 1_024_000). `None` when it is not a valid quantity.
pub fn parse_milli(q: &str) -> Option<i128> {
    let q = q.trim();
    if q.is_empty() {
        return None;
    }
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let (mantissa, exp10, mult): (&str, i32, i128) = match suffix {
        "" => (num, 0, 1),
        "m" => (num, -3, 1),
        "k" => (num, 3, 1),
        "M" => (num, 6, 1),
        "G" => (num, 9, 1),
        "T" => (num, 12, 1),
        "P" => (num, 15, 1),
        "E" => (num, 18, 1),
        "Ki" => (num, 0, 1 << 10),
        "Mi" => (num, 0, 1 << 20),
        "Gi" => (num, 0, 1 << 30),
        "Ti" => (num, 0, 1 << 40),
        "Pi" => (num, 0, 1 << 50),
        "Ei" => (num, 0, 1 << 60),
        s if s.starts_with(['e', 'E']) => (num, s[1..].parse().ok()?, 1),
        _ => return None,
    };
    let negative = mantissa.starts_with('-');
    let mantissa = mantissa.trim_start_matches(['+', '-']);
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    // value = int.frac × 10^exp10 × mult, in thousandths, rounded up like Kubernetes does.
    let digits: String = format!("{int}{frac}");
    let digits: i128 = digits.parse().ok()?;
    let scale = exp10 + 3 - frac.len() as i32;
    let value = if scale >= 0 {
        digits
            .checked_mul(10i128.checked_pow(scale as u32)?)?
            .checked_mul(mult)?
    } else {
        let div = 10i128.checked_pow((-scale) as u32)?;
        let n = digits.checked_mul(mult)?;
        (n + div - 1) / div
    };
    Some(if negative { -value } else { value })
}

/// CPU in millicores.
pub fn cpu_millis(q: &str) -> Option<i64> {
    parse_milli(q).and_then(|v| i64::try_from(v).ok())
}

/// Memory (or any count) in base units, rounded up.
pub fn base_units(q: &str) -> Option<i64> {
    parse_milli(q).and_then(|v| i64::try_from((v + 999) / 1000).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu() {
        assert_eq!(cpu_millis("100m"), Some(100));
        assert_eq!(cpu_millis("2"), Some(2000));
        assert_eq!(cpu_millis("0.5"), Some(500));
        assert_eq!(cpu_millis("1.5"), Some(1500));
        assert_eq!(cpu_millis("abc"), None);
        assert_eq!(cpu_millis(""), None);
    }

    #[test]
    fn memory() {
        assert_eq!(base_units("128Mi"), Some(128 << 20));
        assert_eq!(base_units("1Gi"), Some(1 << 30));
        assert_eq!(base_units("1G"), Some(1_000_000_000));
        assert_eq!(base_units("1e3"), Some(1000));
        assert_eq!(base_units("110"), Some(110));
        assert_eq!(base_units("12Qi"), None);
    }
}
