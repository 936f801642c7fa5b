//! The FE's JSON error envelope: `{"msg":..,"code":..,"data":..,"count":0}`.
//!
//! The FE's `ResponseEntity` is serialized by Jackson, so the keys come in this order and
//! strings are escaped the way Jackson escapes them, which differs from serde_json in the
//! case of the `\u00XX` hex digits.

/// The kinds of error the small-file endpoint sends, named as in the FE's `ResponseEntityBuilder`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// `msg` "Bad Request" with code 403, which is the FE's `RestApiStatusCode.BAD_REQUEST`.
    BadRequest,
    /// `msg` "Error" with code 1.
    CommonError,
    /// `msg` "Internal Error" with code 500.
    InternalError,
    /// `msg` "Unauthorized" with code 401.
    Unauthorized,
}

impl ErrorKind {
    fn msg_and_code(self) -> (&'static str, u16) {
        match self {
            ErrorKind::BadRequest => ("Bad Request", 403),
            ErrorKind::CommonError => ("Error", 1),
            ErrorKind::InternalError => ("Internal Error", 500),
            ErrorKind::Unauthorized => ("Unauthorized", 401),
        }
    }
}

/// Builds the compact JSON body of an FE error envelope with `data` set to `text`.
pub fn error_body(kind: ErrorKind, text: &str) -> String {
    let (msg, code) = kind.msg_and_code();
    let mut body = String::with_capacity(48 + msg.len() + text.len());
    body.push_str("{\"msg\":\"");
    body.push_str(msg);
    body.push_str("\",\"code\":");
    body.push_str(&code.to_string());
    body.push_str(",\"data\":\"");
    push_jackson_escaped(&mut body, text);
    body.push_str("\",\"count\":0}");
    body
}

/// Appends `text` as the inside of a JSON string, escaped as Jackson's default
/// `JsonGenerator` does: `"` and `\` with a backslash, `\b \f \n \r \t` in short form,
/// other characters below U+0020 as `\u00XX` with uppercase hex, everything else as is.
pub fn push_jackson_escaped(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let byte = u32::from(c) as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[byte >> 4]));
                out.push(char::from(HEX[byte & 0xf]));
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(text: &str) -> String {
        let mut out = String::new();
        push_jackson_escaped(&mut out, text);
        out
    }

    #[test]
    fn envelopes_match_the_fe() {
        assert_eq!(
            error_body(
                ErrorKind::BadRequest,
                "Missing parameter. Need token and file id"
            ),
            r#"{"msg":"Bad Request","code":403,"data":"Missing parameter. Need token and file id","count":0}"#
        );
        assert_eq!(
            error_body(ErrorKind::CommonError, "Invalid token"),
            r#"{"msg":"Error","code":1,"data":"Invalid token","count":0}"#
        );
        assert_eq!(
            error_body(ErrorKind::InternalError, "x"),
            r#"{"msg":"Internal Error","code":500,"data":"x","count":0}"#
        );
        assert_eq!(
            error_body(ErrorKind::Unauthorized, "x"),
            r#"{"msg":"Unauthorized","code":401,"data":"x","count":0}"#
        );
    }

    #[test]
    fn quotes_and_backslashes() {
        assert_eq!(escaped(r#"a"b\c"#), r#"a\"b\\c"#);
    }

    #[test]
    fn short_form_controls() {
        assert_eq!(escaped("\u{08}\u{0C}\n\r\t"), r"\b\f\n\r\t");
    }

    #[test]
    fn other_controls_uppercase_hex() {
        assert_eq!(escaped("\u{00}"), r"\u0000");
        assert_eq!(escaped("\u{1F}"), r"\u001F");
        assert_eq!(escaped("\u{0B}"), r"\u000B");
        assert_eq!(escaped("\u{1B}"), r"\u001B");
    }

    #[test]
    fn slash_delete_and_non_ascii_unchanged() {
        assert_eq!(escaped("/"), "/");
        assert_eq!(escaped("\u{7F}"), "\u{7F}");
        assert_eq!(escaped("١٢٣ é 😀 \u{2028}"), "١٢٣ é 😀 \u{2028}");
    }

    #[test]
    fn result_is_valid_json() {
        let text = "x\"\\\u{01}\u{1F}\n/é";
        let body = error_body(ErrorKind::BadRequest, text);
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["data"], text);
    }
}
