//! OpenStack microversions: one type for both APIs this backend speaks, Block Storage v3
//! (`OpenStack-API-Version: volume 3.66`) and Compute (`compute 2.89`). They are read from the
//! config file (`max_microversion`, `max_compute_microversion`) and from each service's
//! version document. A leaf, so `config`, `client` and `nova` all use it without importing
//! each other.

use std::fmt;

/// A microversion, `major.minor`: 3.x for Block Storage v3, 2.x for Compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Microversion {
    /// Major: 3 for Block Storage v3, 2 for Compute.
    pub major: u32,
    /// Minor.
    pub minor: u32,
}

impl Microversion {
    /// `major.minor`.
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// Parses `3.66`.
    pub fn parse(text: &str) -> Option<Self> {
        let (major, minor) = text.trim().split_once('.')?;
        Some(Self {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }
}

impl fmt::Display for Microversion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microversions_order_and_print() {
        let a = Microversion::parse("3.9").expect("parses");
        let b = Microversion::parse("3.66").expect("parses");
        assert!(a < b);
        assert_eq!(b.to_string(), "3.66");
        assert!(Microversion::parse("three").is_none());
        assert_eq!(
            Microversion::parse(" 2.89 "),
            Some(Microversion::new(2, 89))
        );
    }
}
