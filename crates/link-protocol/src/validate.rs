//! Validation rules for kinds, topics and ids, and the JavaScript coercions
//! the reference applies before checking them (protocol §4.1, §5.1, §6.1).

use std::borrow::Cow;

use serde_json::Value;

use crate::canonical;
use crate::error::KindError;

/// Longest id, kind or topic, in UTF-16 units (the reference's `.length`).
pub const MAX_ID_LEN: usize = 256;
/// Longest kind.
pub const MAX_KIND_LEN: usize = 256;
/// Longest topic.
pub const MAX_TOPIC_LEN: usize = 256;
/// Longest hello `name` (longer names are cut).
pub const MAX_NAME_LEN: usize = 256;
/// Kinds no peer may claim.
pub const RESERVED_KINDS: [&str; 4] = ["server", "__proto__", "constructor", "prototype"];

/// True for characters of `[a-zA-Z0-9._-]`.
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// Length in UTF-16 code units, as JavaScript's `String.prototype.length`.
pub fn js_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.encode_utf16().count()
    }
}

/// Checks an already-trimmed kind against the hub's rules.
pub fn check_kind(kind: &str) -> Result<(), KindError> {
    if kind.is_empty() {
        Err(KindError::Missing)
    } else if js_len(kind) > MAX_KIND_LEN {
        Err(KindError::Oversized)
    } else if !kind.bytes().all(is_name_byte) {
        Err(KindError::Invalid)
    } else if RESERVED_KINDS.contains(&kind) {
        Err(KindError::Reserved)
    } else {
        Ok(())
    }
}

/// Checks a client's own configured kind: as [`check_kind`], and surrounding
/// whitespace is an error rather than trimmed.
pub fn check_own_kind(kind: &str) -> Result<(), KindError> {
    if js_trim(kind) != kind {
        return Err(KindError::Invalid);
    }
    check_kind(kind)
}

/// True when `topic` matches `^[a-zA-Z0-9._-]+$` and has 1..=256 chars.
pub fn is_valid_topic(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= MAX_TOPIC_LEN && topic.bytes().all(is_name_byte)
}

/// Which topic rule (protocol §6.1) a topic breaks. The frame is still
/// dropped as `invalid-topic` (the `DropReason` and its code do not
/// change); [`TopicError::detail`] is the sub-reason for
/// [`ProtocolError::with_detail`](crate::ProtocolError::with_detail) and
/// `Display` a message for people.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The frame has no topic (absent, or not a string).
    #[error("no topic")]
    Missing,
    /// The empty string.
    #[error("the topic is empty (1 to 256 characters)")]
    Empty,
    /// More than [`MAX_TOPIC_LEN`] characters.
    #[error("the topic has {len} characters (at most 256)")]
    TooLong {
        /// Its length in UTF-16 units.
        len: usize,
    },
    /// A character outside `a-z A-Z 0-9 . _ -` (wildcards are reserved).
    #[error("the topic has {found:?} at character {at} (only a-z A-Z 0-9 . _ - are allowed)")]
    BadCharacter {
        /// The first character that breaks the rule.
        found: char,
        /// Its position, counting characters from 1.
        at: usize,
    },
}

impl TopicError {
    /// The rule's stable name, for a protocol error's `detail`.
    pub const fn detail(&self) -> &'static str {
        match self {
            Self::Missing => "missing-topic",
            Self::Empty => "empty-topic",
            Self::TooLong { .. } => "oversized-topic",
            Self::BadCharacter { .. } => "bad-topic-character",
        }
    }
}

/// Checks a topic against the rules: 1 to 256 of `[a-zA-Z0-9._-]`.
/// Exactly the topics [`is_valid_topic`] accepts pass; the error names
/// the first rule broken (length before characters).
pub fn check_topic(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    let len = js_len(topic);
    if len > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong { len });
    }
    match topic
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii() && is_name_byte(*c as u8)))
    {
        Some((i, found)) => Err(TopicError::BadCharacter { found, at: i + 1 }),
        None => Ok(()),
    }
}

/// [`check_topic`] for a frame's optional topic field.
pub fn check_topic_field(topic: Option<&str>) -> Result<(), TopicError> {
    topic.map_or(Err(TopicError::Missing), check_topic)
}

/// True when `id` is a usable message id (non-empty, ≤ 256 UTF-16 units).
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && js_len(id) <= MAX_ID_LEN
}

/// JavaScript's `String.prototype.trim`: WhiteSpace and LineTerminator
/// (which, unlike Rust's `trim`, includes U+FEFF and excludes U+0085).
pub fn js_trim(s: &str) -> &str {
    s.trim_matches(is_js_whitespace)
}

fn is_js_whitespace(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202f}'
                | '\u{205f}'
                | '\u{3000}'
                | '\u{feff}'
    )
}

/// JavaScript's `String(value)` for a JSON value.
pub fn js_string(value: &Value) -> Cow<'_, str> {
    match value {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed("null"),
        Value::Bool(true) => Cow::Borrowed("true"),
        Value::Bool(false) => Cow::Borrowed("false"),
        Value::Number(n) => {
            let mut s = String::new();
            canonical::write_number(n, &mut s);
            Cow::Owned(s)
        }
        Value::Object(_) => Cow::Borrowed("[object Object]"),
        Value::Array(items) => {
            let parts: Vec<Cow<'_, str>> = items
                .iter()
                .map(|v| {
                    if v.is_null() {
                        Cow::Borrowed("")
                    } else {
                        js_string(v)
                    }
                })
                .collect();
            Cow::Owned(parts.join(","))
        }
    }
}

/// JavaScript truthiness of a JSON value.
pub fn js_truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Cuts `s` to at most `max` UTF-16 units, never splitting a character.
pub fn js_truncate(s: &str, max: usize) -> &str {
    let mut units = 0;
    for (i, c) in s.char_indices() {
        units += c.len_utf16();
        if units > max {
            return &s[..i];
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn topic_errors_name_the_rule() {
        assert_eq!(check_topic("orders.eu-1_x"), Ok(()));
        assert_eq!(check_topic(""), Err(TopicError::Empty));
        assert_eq!(
            check_topic(&"a".repeat(257)),
            Err(TopicError::TooLong { len: 257 })
        );
        assert_eq!(
            check_topic("news/eu"),
            Err(TopicError::BadCharacter { found: '/', at: 5 })
        );
        assert_eq!(
            check_topic("né"),
            Err(TopicError::BadCharacter { found: 'é', at: 2 })
        );
        assert_eq!(check_topic_field(None), Err(TopicError::Missing));
        assert_eq!(
            check_topic("a b").unwrap_err().to_string(),
            "the topic has ' ' at character 2 (only a-z A-Z 0-9 . _ - are allowed)"
        );
        assert_eq!(
            [
                TopicError::Missing,
                TopicError::Empty,
                TopicError::TooLong { len: 300 },
                TopicError::BadCharacter { found: '*', at: 1 }
            ]
            .map(|e| e.detail()),
            [
                "missing-topic",
                "empty-topic",
                "oversized-topic",
                "bad-topic-character"
            ]
        );
        // The same topics pass as with is_valid_topic.
        let long = "é".repeat(200);
        for t in [
            "a",
            "x*",
            "a.b",
            &"z".repeat(256),
            &"z".repeat(257),
            &long,
            " ",
            "ok\n",
        ] {
            assert_eq!(check_topic(t).is_ok(), is_valid_topic(t), "{t:?}");
        }
    }

    #[test]
    fn kind_rules() {
        assert_eq!(check_kind("alpha-1.x_y"), Ok(()));
        assert_eq!(check_kind(""), Err(KindError::Missing));
        assert_eq!(check_kind(&"a".repeat(257)), Err(KindError::Oversized));
        assert_eq!(check_kind(&"a".repeat(256)), Ok(()));
        assert_eq!(check_kind("a b"), Err(KindError::Invalid));
        assert_eq!(check_kind("a*"), Err(KindError::Invalid));
        for reserved in RESERVED_KINDS {
            assert_eq!(check_kind(reserved), Err(KindError::Reserved));
        }
        assert_eq!(check_own_kind(" alpha"), Err(KindError::Invalid));
    }

    #[test]
    fn topic_rules() {
        assert!(is_valid_topic("news.eu-1_x"));
        assert!(is_valid_topic(&"t".repeat(256)));
        assert!(!is_valid_topic(&"t".repeat(257)));
        assert!(!is_valid_topic(""));
        assert!(!is_valid_topic("news.*"));
        assert!(!is_valid_topic("a b"));
        assert!(!is_valid_topic("é"));
    }

    #[test]
    fn id_rules_count_utf16_units() {
        assert!(is_valid_id("x"));
        assert!(!is_valid_id(""));
        assert!(is_valid_id(&"😀".repeat(128)));
        assert!(!is_valid_id(&format!("{}a", "😀".repeat(128))));
    }

    #[test]
    fn js_coercions() {
        assert_eq!(js_string(&json!(5)), "5");
        assert_eq!(js_string(&json!(["a", null, 1.5])), "a,,1.5");
        assert_eq!(js_string(&json!({"a": 1})), "[object Object]");
        assert_eq!(js_trim("\u{feff} alpha\u{3000}"), "alpha");
        assert_eq!(js_trim("\u{85}x"), "\u{85}x");
        assert!(!js_truthy(&json!(0)) && !js_truthy(&json!("")) && js_truthy(&json!("0")));
        assert_eq!(js_truncate("ab😀c", 3), "ab");
        assert_eq!(js_truncate("ab😀c", 4), "ab😀");
    }
}
