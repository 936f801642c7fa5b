//! Fuzzes `push_jackson_escaped` and `error_body`.
//!
//! The escaped text must read back as the same string with serde_json, contain no raw
//! control character, and use uppercase hex in `\u00XX` escapes as Jackson does. The
//! envelope must keep the FE's member order.

#![no_main]

mod common;

use doris_fe_proxy::envelope::{ErrorKind, error_body, push_jackson_escaped};
use libfuzzer_sys::fuzz_target;

use common::parse_envelope;

/// Checks every `\u` escape in `escaped` for four uppercase hex digits.
fn check_unicode_escapes(escaped: &str) {
    let bytes = escaped.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        if bytes.get(i + 1) == Some(&b'u') {
            let Some(hex) = bytes.get(i + 2..i + 6) else {
                panic!("escape at the end of {escaped:?} is cut short");
            };
            assert!(
                hex.iter()
                    .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)),
                "escape {:?} is not uppercase hex",
                String::from_utf8_lossy(&bytes[i..i + 6])
            );
            i += 6;
        } else {
            // A two-character escape such as `\\` or `\n`.
            i += 2;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };

    let mut escaped = String::from("prefix:");
    push_jackson_escaped(&mut escaped, text);
    let escaped = escaped
        .strip_prefix("prefix:")
        .expect("push_jackson_escaped appends");
    assert!(
        !escaped.chars().any(|c| u32::from(c) < 0x20),
        "raw control character in {escaped:?}"
    );
    check_unicode_escapes(escaped);
    let read_back: String = serde_json::from_str(&format!("\"{escaped}\""))
        .unwrap_or_else(|e| panic!("{escaped:?} is not a JSON string body: {e}"));
    assert_eq!(read_back, text);

    let (kind, msg, code) = match selector % 4 {
        0 => (ErrorKind::BadRequest, "Bad Request", 403),
        1 => (ErrorKind::CommonError, "Error", 1),
        2 => (ErrorKind::InternalError, "Internal Error", 500),
        _ => (ErrorKind::Unauthorized, "Unauthorized", 401),
    };
    let envelope = parse_envelope(error_body(kind, text).as_bytes());
    assert_eq!(envelope.msg, msg);
    assert_eq!(envelope.code, code);
    assert_eq!(envelope.data, text);
    assert_eq!(envelope.count, 0);
});
