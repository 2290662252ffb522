//! CNI spec versions ("0.3.1", "1.0.0") compared as numbers.

/// Parses "a.b.c" (missing parts are 0).
pub(crate) fn parse(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.trim().split('.');
    let a = it.next()?.parse().ok()?;
    let b = it.next().unwrap_or("0").parse().ok()?;
    let c = it.next().unwrap_or("0").parse().ok()?;
    Some((a, b, c))
}

/// Whether `v` is at least `min`; an unparsable version counts as old.
pub(crate) fn at_least(v: &str, min: (u32, u32, u32)) -> bool {
    parse(v).is_some_and(|p| p >= min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_versions() {
        assert!(at_least("1.0.0", (0, 4, 0)));
        assert!(at_least("0.4.0", (0, 4, 0)));
        assert!(!at_least("0.3.1", (0, 4, 0)));
        assert!(!at_least("1.0.0", (1, 1, 0)));
        assert!(at_least("1.1.0", (1, 1, 0)));
        assert!(!at_least("garbage", (0, 1, 0)));
    }
}
