//! Ids and API keys: time-ordered prefixed ids (`Cont_<uuid v7>`), random keys, key hashes.

use sha2::{Digest, Sha256};

/// A new id with a class prefix and a time-ordered UUID (v7 keeps index inserts local).
/// Written straight into a string of the right size (a bill run makes three per contract).
pub fn new_id(prefix: &str) -> String {
    let mut buf = uuid::Uuid::encode_buffer();
    let uuid = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buf);
    let mut id = String::with_capacity(prefix.len() + 1 + uuid.len());
    id.push_str(prefix);
    id.push('_');
    id.push_str(uuid);
    id
}

/// A new random API key (244 random bits); test-mode keys say so.
pub fn new_api_key(test_mode: bool) -> String {
    let mode = if test_mode { "test" } else { "live" };
    format!(
        "tk_{mode}_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The stored form of an API key: its SHA-256, hex. Keys are never stored in clear.
pub fn hash_key(key: &str) -> String {
    sha256_hex(&[key.as_bytes()])
}

/// The SHA-256 of the concatenated `parts`, as lower-case hex.
pub fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_prefix_and_sort_by_time() {
        let a = new_id("Cont");
        let b = new_id("Cont");
        assert!(a.starts_with("Cont_") && a.len() == 5 + 36);
        // The UUID part is the canonical lowercase hyphenated form.
        let u = uuid::Uuid::parse_str(&a[5..]).unwrap();
        assert_eq!(u.get_version_num(), 7);
        assert_eq!(&a[5..], u.hyphenated().to_string());
        assert!(a < b, "v7 ids are time-ordered: {a} < {b}");
    }

    #[test]
    fn keys_hash_stably_and_differ() {
        let k = new_api_key(true);
        assert!(k.starts_with("tk_test_"));
        assert_eq!(hash_key(&k), hash_key(&k));
        assert_ne!(hash_key(&k), hash_key(&new_api_key(true)));
        // sha256("abc")
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
