//! Stable short hashes for names and the pod-template-hash label.

/// FNV-1a, 32 bits.
pub fn fnv32a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Encodes a number with the alphabet Kubernetes uses for generated names (no vowels, no
/// look-alike digits), so the result never spells words and is DNS-label safe.
pub fn safe_encode(mut n: u32) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = Vec::new();
    loop {
        out.push(ALPHABET[(n % ALPHABET.len() as u32) as usize]);
        n /= ALPHABET.len() as u32;
        if n == 0 {
            break;
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

/// A short stable hash of a JSON value (object keys are sorted by serde_json's map).
pub fn hash_json(v: &serde_json::Value) -> String {
    safe_encode(fnv32a(v.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_safe() {
        let a = hash_json(&serde_json::json!({"b": 1, "a": [1, 2]}));
        assert_eq!(a, hash_json(&serde_json::json!({"a": [1, 2], "b": 1})));
        assert_ne!(a, hash_json(&serde_json::json!({"a": [2, 1], "b": 1})));
        assert!(a.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }
}
