//! PostgreSQL write-ahead log positions.

use std::fmt;
use std::str::FromStr;

/// A WAL position (`pg_lsn`), ordered as PostgreSQL orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The position as 16 hex digits, so positions compare as strings in the
    /// same order as numbers (Redis sorted-set members rely on this).
    pub fn to_sortable(self) -> String {
        format!("{:016X}", self.0)
    }

    /// Reads a position written by [`Lsn::to_sortable`].
    pub fn from_sortable(text: &str) -> Option<Lsn> {
        u64::from_str_radix(text, 16).ok().map(Lsn)
    }

    /// Bytes from `earlier` to `self`, or 0 when `earlier` is ahead.
    pub fn bytes_after(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

/// The text is not of the form `16/B374D848`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {0:?}: expected the form 16/B374D848")]
pub struct LsnParseError(pub String);

impl FromStr for Lsn {
    type Err = LsnParseError;

    fn from_str(s: &str) -> Result<Lsn, LsnParseError> {
        let err = || LsnParseError(s.to_owned());
        let (high, low) = s.split_once('/').ok_or_else(err)?;
        let high = u32::from_str_radix(high, 16).map_err(|_| err())?;
        let low = u32::from_str_radix(low, 16).map_err(|_| err())?;
        Ok(Lsn((u64::from(high) << 32) | u64::from(low)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_parses_and_prints_postgres_form() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn.0, 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert!("nonsense".parse::<Lsn>().is_err());
    }

    #[test]
    fn sortable_form_orders_like_numbers() {
        let small: Lsn = "0/FFFFFFFF".parse().unwrap();
        let big: Lsn = "1/0".parse().unwrap();
        assert!(small.to_sortable() < big.to_sortable());
        assert_eq!(Lsn::from_sortable(&big.to_sortable()), Some(big));
    }
}
