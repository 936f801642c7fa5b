//! File id parsing with the rules of Java's `Long.valueOf(String)`, which the FE uses.

use unicode_general_category::{GeneralCategory, get_general_category};

/// Parses a file id as Java's `Long.valueOf` does: an optional single `+` or `-`, then one
/// or more decimal digits, within the signed 64-bit range. Leading zeros are allowed.
///
/// Java's `Character.digit` also accepts every Unicode decimal digit (general category Nd),
/// such as Arabic-Indic `١` or full-width `１`, by its digit value, and so does this parser.
/// Returns `None` for anything else, overflow included.
///
/// NOTE: the Nd table is Unicode 16. Java 8 implements Unicode 6.2 and Java 17 Unicode 13, so
/// digits of scripts added since then parse here but not on those FEs. No Doris client
/// sends them.
pub fn parse_file_id(text: &str) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if digits.is_empty() {
        return None;
    }

    // Accumulate as a negative number, as Java does, so that i64::MIN parses.
    let mut value: i64 = 0;
    for c in digits.chars() {
        let digit = decimal_digit_value(c)?;
        value = value.checked_mul(10)?.checked_sub(i64::from(digit))?;
    }
    if negative {
        Some(value)
    } else {
        value.checked_neg()
    }
}

/// Returns the value of a Unicode decimal digit (general category Nd), or `None`.
fn decimal_digit_value(c: char) -> Option<u32> {
    if let Some(d) = c.to_digit(10) {
        return Some(d);
    }
    if !is_decimal_digit(c) {
        return None;
    }
    // Unicode encodes every Nd digit in runs of ten consecutive code points, 0 through 9.
    // Some runs follow each other directly (the mathematical digits U+1D7CE..U+1D7FF), so
    // the value is the distance from the start of the whole contiguous run, modulo 10.
    let mut start = u32::from(c);
    while let Some(previous) = start.checked_sub(1).and_then(char::from_u32) {
        if !is_decimal_digit(previous) {
            break;
        }
        start -= 1;
    }
    Some((u32::from(c) - start) % 10)
}

fn is_decimal_digit(c: char) -> bool {
    get_general_category(c) == GeneralCategory::DecimalNumber
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_ids() {
        assert_eq!(parse_file_id("11002"), Some(11002));
        assert_eq!(parse_file_id("0"), Some(0));
        assert_eq!(parse_file_id("-0"), Some(0));
    }

    #[test]
    fn signs() {
        assert_eq!(parse_file_id("+11002"), Some(11002));
        assert_eq!(parse_file_id("-11002"), Some(-11002));
        assert_eq!(parse_file_id("+"), None);
        assert_eq!(parse_file_id("-"), None);
        assert_eq!(parse_file_id("++1"), None);
        assert_eq!(parse_file_id("+-1"), None);
        assert_eq!(parse_file_id("-+1"), None);
        assert_eq!(parse_file_id("--1"), None);
    }

    #[test]
    fn leading_zeros() {
        assert_eq!(parse_file_id("007"), Some(7));
        assert_eq!(parse_file_id("011002"), Some(11002));
        assert_eq!(parse_file_id("-000"), Some(0));
    }

    #[test]
    fn i64_range_limits() {
        assert_eq!(parse_file_id("9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_file_id("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_file_id("9223372036854775808"), None);
        assert_eq!(parse_file_id("-9223372036854775809"), None);
        assert_eq!(parse_file_id("99999999999999999999999"), None);
        assert_eq!(parse_file_id("0009223372036854775807"), Some(i64::MAX));
    }

    #[test]
    fn arabic_indic_digits() {
        assert_eq!(parse_file_id("١٢٣"), Some(123));
        assert_eq!(parse_file_id("-٠٩"), Some(-9));
    }

    #[test]
    fn full_width_digits() {
        assert_eq!(parse_file_id("１２３"), Some(123));
        assert_eq!(parse_file_id("１1０"), Some(110));
    }

    #[test]
    fn other_unicode_digits() {
        // Devanagari, and mathematical bold / double-struck digits (adjacent runs).
        assert_eq!(parse_file_id("४२"), Some(42));
        assert_eq!(parse_file_id("\u{1D7CF}\u{1D7D0}"), Some(12));
        assert_eq!(parse_file_id("\u{1D7D9}\u{1D7E1}"), Some(19));
        assert_eq!(parse_file_id("\u{1D7FF}"), Some(9));
    }

    #[test]
    fn non_decimal_numbers_rejected() {
        // Superscript two (No) and Roman numeral one (Nl) are numbers but not Nd.
        assert_eq!(parse_file_id("²"), None);
        assert_eq!(parse_file_id("Ⅰ"), None);
        assert_eq!(parse_file_id("½"), None);
    }

    #[test]
    fn malformed_ids_rejected() {
        for text in [
            "", " 1", "1 ", "1.5", "1e3", "0x10", "abc", "1_000", "1,000", "١ ",
        ] {
            assert_eq!(parse_file_id(text), None, "{text:?}");
        }
    }

    #[test]
    fn every_ascii_value_round_trips() {
        for value in [1i64, 42, 11002, i64::MAX, i64::MIN, -1] {
            assert_eq!(parse_file_id(&value.to_string()), Some(value));
        }
    }
}
