//! A secret string at the process edge: zeroized on drop, never printed.

use serde::{Deserialize, Deserializer};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// A secret setting value (a token, an API key). `Debug` prints `Secret(..)`; there is no
/// `Display`, so a secret cannot reach a log line or an error body by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }
    /// The plaintext; call only where it is used (a comparison, an outgoing header).
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Length in characters (for the token-strength rule; not secret).
    pub fn char_len(&self) -> usize {
        self.0.chars().count()
    }
    /// Constant-time equality with presented bytes.
    pub fn ct_eq(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Secret::new(String::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert!(s.ct_eq(b"hunter2-very-secret"));
        assert!(!s.ct_eq(b"hunter2-very-secreT"));
        assert!(!s.ct_eq(b""));
    }
}
