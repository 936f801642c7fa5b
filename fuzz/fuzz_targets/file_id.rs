//! Fuzzes `parse_file_id` against `i64::from_str`.
//!
//! For ASCII text, Java's `Long.valueOf` (which the FE uses) and Rust's `i64::from_str`
//! accept the same strings: an optional `+` or `-`, then one or more digits, within the
//! signed 64-bit range. Text with non-ASCII digits is checked by translating each
//! character to the digit that `parse_file_id` gives it alone and parsing the result with
//! `i64::from_str`. That checks signs, overflow and the digit sequence, and the unit tests
//! cover the digit table itself.

#![no_main]

use doris_fe_proxy::file_id::parse_file_id;
use libfuzzer_sys::fuzz_target;

/// Returns the ASCII translation of `text`: its sign, then each character replaced by its
/// value as a single-digit id, or `None` when a character is not a digit on its own.
fn ascii_translation(text: &str) -> Option<String> {
    let (sign, digits) = match text.chars().next() {
        Some(sign @ ('+' | '-')) => (Some(sign), &text[1..]),
        _ => (None, text),
    };
    let mut translated: String = sign.into_iter().collect();
    for c in digits.chars() {
        let value = parse_file_id(c.encode_utf8(&mut [0; 4]))?;
        assert!(
            (0..=9).contains(&value),
            "single character {c:?} parses as {value}"
        );
        assert!(c.is_numeric(), "{c:?} parses as a digit but is not numeric");
        translated.push(char::from(b'0' + value as u8));
    }
    Some(translated)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = parse_file_id(text);

    if text.is_ascii() {
        assert_eq!(parsed, text.parse::<i64>().ok(), "ASCII id {text:?}");
    } else {
        let reference = ascii_translation(text).and_then(|ascii| ascii.parse::<i64>().ok());
        assert_eq!(parsed, reference, "non-ASCII id {text:?}");
    }

    if let Some(value) = parsed {
        assert_eq!(parse_file_id(&value.to_string()), Some(value));
    }
});
