//! Checkpoint public keys as an operator pins them, kept somewhere the `cdx` database's
//! writers cannot reach (`[cdx.audit] pinned_public_keys`, `audit verify --public-key`).

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;

/// An Ed25519 public key that must have signed every checkpoint. Written as base64url (as
/// `metatron audit key` prints it), standard base64 or 64 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PinnedKey([u8; 32]);

impl PinnedKey {
    /// Parses a key in any of the accepted notations.
    pub fn parse(text: &str) -> Result<PinnedKey, String> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            decode_hex(text)
        } else {
            let unpadded = text.trim_end_matches('=');
            URL_SAFE_NO_PAD
                .decode(unpadded)
                .or_else(|_| STANDARD_NO_PAD.decode(unpadded))
                .ok()
        };
        bytes
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .map(PinnedKey)
            .ok_or_else(|| {
                format!(
                    "`{text}` is not an Ed25519 public key: expected 32 bytes as base64url, \
                     base64 or 64 hex digits"
                )
            })
    }

    /// Whether `stored` (base64url, as `audit_signing_keys.public_key` holds it) is this key.
    pub fn matches(&self, stored: &str) -> bool {
        URL_SAFE_NO_PAD
            .decode(stored)
            .is_ok_and(|bytes| bytes.as_slice() == self.0.as_slice())
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl std::str::FromStr for PinnedKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        PinnedKey::parse(s)
    }
}

impl TryFrom<String> for PinnedKey {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        PinnedKey::parse(&s)
    }
}

impl From<PinnedKey> for String {
    fn from(key: PinnedKey) -> String {
        key.to_string()
    }
}

/// Base64url, the notation `audit key` and `audit verify` print.
impl std::fmt::Display for PinnedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl std::fmt::Debug for PinnedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PinnedKey({self})")
    }
}

/// The keys of a key file: one per line, blank lines and `#` comments ignored. A line may be
/// a line of `metatron audit key` (`<key id> <public key>`): its last word is the key.
pub fn parse_key_list(text: &str) -> Result<Vec<PinnedKey>, String> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let line = line.split('#').next().unwrap_or_default();
            line.split_whitespace().last().map(|word| (i + 1, word))
        })
        .map(|(number, word)| PinnedKey::parse(word).map_err(|e| format!("line {number}: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_reads_the_same_in_every_notation() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 7 + 250) as u8);
        let key = PinnedKey(bytes);
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let standard = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert!(
            standard.contains('+') || standard.contains('/'),
            "{standard}"
        );
        for text in [key.to_string(), hex.to_uppercase(), hex, standard] {
            assert_eq!(PinnedKey::parse(&text), Ok(key), "{text}");
        }
        assert!(key.matches(&URL_SAFE_NO_PAD.encode(bytes)));
        assert!(!key.matches(&URL_SAFE_NO_PAD.encode([0u8; 32])));
    }

    #[test]
    fn anything_but_32_bytes_is_refused_with_the_text() {
        for text in [
            "",
            "abc",
            &"ab".repeat(31),
            &URL_SAFE_NO_PAD.encode([1u8; 33]),
        ] {
            let err = PinnedKey::parse(text).expect_err(text);
            assert!(err.contains("Ed25519"), "{err}");
        }
    }

    #[test]
    fn a_key_file_takes_the_last_word_of_each_line() {
        let a = PinnedKey([1; 32]);
        let b = PinnedKey([2; 32]);
        let file = format!("# pinned on 2025-01-31\n\n01a2-key-id {a}\n  {b}  # spare\n");
        assert_eq!(parse_key_list(&file), Ok(vec![a, b]));
        let err = parse_key_list(&format!("{a}\nnot-a-key\n")).expect_err("bad line");
        assert!(err.starts_with("line 2:"), "{err}");
    }
}
