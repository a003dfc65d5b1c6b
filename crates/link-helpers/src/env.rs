//! Typed environment variables: numbers and booleans that keep `0` and
//! `false`, a check that lists *every* missing key at once, and a
//! [`ClientConfigBuilder`] filled from `{prefix}LINK_*` variables.
//!
//! Every reader takes its values from an [`EnvSource`]: the process
//! environment ([`ProcessEnv`], what the free functions use) or anything
//! else, e.g. a closure over a `HashMap` in tests, so nothing here needs
//! to mutate the process environment.
//!
//! A variable that is unset, empty or only whitespace counts as *missing*
//! (`Ok(None)`); a value that is set but unusable is an error naming the
//! variable and the value.
//!
//! ```
//! use std::collections::HashMap;
//! use link_helpers::env::Env;
//!
//! let vars = HashMap::from([("PORT", "8080"), ("DEBUG", "off"), ("RETRIES", "0")]);
//! let env = Env::new(move |k: &str| vars.get(k).map(|v| v.to_string()));
//! assert_eq!(env.num::<u16>("PORT")?, Some(8080));
//! assert_eq!(env.num::<u32>("RETRIES")?, Some(0));
//! assert_eq!(env.bool("DEBUG")?, Some(false));
//! assert_eq!(env.bool("MISSING")?, None);
//! # Ok::<(), link_helpers::env::EnvError>(())
//! ```

use std::str::FromStr;
use std::time::Duration;

use link_client::{ClientConfigBuilder, UrlOrder};
use link_protocol::HashAlgo;

/// Where variables come from.
pub trait EnvSource {
    /// The raw value of `key`, if set.
    fn get(&self, key: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> EnvSource for F {
    fn get(&self, key: &str) -> Option<String> {
        self(key)
    }
}

/// The process environment. A value that is not valid UTF-8 is read
/// lossily, so parsing it fails with an error naming the variable.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var_os(key).map(|v| v.to_string_lossy().into_owned())
    }
}

/// A variable that is missing or unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// Required variables are unset or empty (all of them, in the order asked).
    #[error("missing required environment variable(s): {}", .keys.join(", "))]
    Missing {
        /// Every missing key.
        keys: Vec<String>,
    },
    /// A variable is set to a value that cannot be used.
    #[error("environment variable {key}={value:?} is invalid: {reason}")]
    Invalid {
        /// The variable (with its prefix).
        key: String,
        /// The value as set (trimmed).
        value: String,
        /// What was expected.
        reason: String,
    },
}

impl EnvError {
    /// Stable code: `ENV_MISSING` or `ENV_INVALID`.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Missing { .. } => "ENV_MISSING",
            Self::Invalid { .. } => "ENV_INVALID",
        }
    }

    fn invalid(key: &str, value: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            value: value.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Numbers [`Env::num`] can read. Floats must be finite.
pub trait EnvNum: FromStr + Copy {
    /// A short description for error messages (`an integer in u16`, …).
    const EXPECTED: &'static str;

    /// False for values the type can hold but a setting never wants (NaN, ±inf).
    fn is_usable(&self) -> bool {
        true
    }
}

macro_rules! env_int {
    ($($t:ty),*) => {$(
        impl EnvNum for $t {
            const EXPECTED: &'static str = concat!("an integer (", stringify!($t), ")");
        }
    )*};
}
env_int!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);

macro_rules! env_float {
    ($($t:ty),*) => {$(
        impl EnvNum for $t {
            const EXPECTED: &'static str = "a finite number";
            fn is_usable(&self) -> bool {
                self.is_finite()
            }
        }
    )*};
}
env_float!(f32, f64);

/// Typed reads over an [`EnvSource`].
#[derive(Clone, Debug, Default)]
pub struct Env<S = ProcessEnv> {
    source: S,
}

impl Env<ProcessEnv> {
    /// Reads the process environment.
    pub fn process() -> Self {
        Self { source: ProcessEnv }
    }
}

impl<S: EnvSource> Env<S> {
    /// Reads from `source`.
    pub fn new(source: S) -> Self {
        Self { source }
    }

    /// The trimmed value, or `None` when unset or blank.
    pub fn string(&self, key: &str) -> Option<String> {
        let raw = self.source.get(key)?;
        let trimmed = raw.trim();
        (!trimmed.is_empty()).then(|| trimmed.to_owned())
    }

    /// A number; `None` when unset or blank, so `0` is kept.
    pub fn num<T: EnvNum>(&self, key: &str) -> Result<Option<T>, EnvError> {
        let Some(value) = self.string(key) else {
            return Ok(None);
        };
        match value.parse::<T>() {
            Ok(n) if n.is_usable() => Ok(Some(n)),
            _ => Err(EnvError::invalid(key, &value, T::EXPECTED)),
        }
    }

    /// A boolean: `true/false/1/0/yes/no/on/off`, any case; `None` when
    /// unset or blank, so `false` and `0` are kept.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, EnvError> {
        let Some(value) = self.string(key) else {
            return Ok(None);
        };
        match value.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Some(true)),
            "false" | "0" | "no" | "off" => Ok(Some(false)),
            _ => Err(EnvError::invalid(
                key,
                &value,
                "a boolean (true/false, 1/0, yes/no, on/off)",
            )),
        }
    }

    /// A duration given in whole milliseconds.
    pub fn duration_ms(&self, key: &str) -> Result<Option<Duration>, EnvError> {
        Ok(self.num::<u64>(key)?.map(Duration::from_millis))
    }

    /// Fails with every unset or blank key at once.
    pub fn require(&self, keys: &[&str]) -> Result<(), EnvError> {
        let missing: Vec<String> = keys
            .iter()
            .filter(|k| self.string(k).is_none())
            .map(|k| (*k).to_owned())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(EnvError::Missing { keys: missing })
        }
    }

    fn positive(&self, key: &str) -> Result<Option<usize>, EnvError> {
        match self.num::<usize>(key)? {
            Some(0) => Err(EnvError::invalid(key, "0", "must be positive")),
            other => Ok(other),
        }
    }

    /// A client configuration builder from `{prefix}LINK_*` variables
    /// (see [`client_config_from_env`]).
    pub fn client_config(&self, prefix: &str) -> Result<ClientConfigBuilder, EnvError> {
        let key = |name: &str| format!("{prefix}{name}");
        let mut b = link_client::ClientConfig::builder();
        let url_key = key("LINK_URL");
        if let Some(urls) = self.string(&url_key) {
            b = b.urls(url_list(&url_key, &urls)?);
        }
        let order_key = key("LINK_URL_ORDER");
        if let Some(v) = self.string(&order_key) {
            let order = v
                .parse::<UrlOrder>()
                .map_err(|_| EnvError::invalid(&order_key, &v, "ordered or random"))?;
            b = b.url_order(order);
        }
        if let Some(kind) = self.string(&key("LINK_KIND")) {
            b = b.kind(kind);
        }
        // The secret is used as set: surrounding spaces may be part of it.
        if let Some(secret) = self
            .source
            .get(&key("LINK_SECRET"))
            .filter(|s| !s.is_empty())
        {
            b = b.secret(secret);
        }
        let hash_key = key("LINK_HASH_ALGO");
        if let Some(v) = self.string(&hash_key) {
            let algo = v
                .parse::<HashAlgo>()
                .map_err(|_| EnvError::invalid(&hash_key, &v, "sha256, sha384 or sha512"))?;
            b = b.hash(algo);
        }
        let deflate_key = key("LINK_PERMESSAGE_DEFLATE");
        if let Some(v) = self.bool(&deflate_key)? {
            if v {
                return Err(EnvError::invalid(
                    &deflate_key,
                    "true",
                    "permessage-deflate is not supported by the Rust client",
                ));
            }
            b = b.per_message_deflate(false);
        }
        if let Some(v) = self.bool(&key("LINK_RECONNECT_ON_REJECTION"))? {
            b = b.reconnect_on_rejection(v);
        }
        let jitter_key = key("LINK_RECONNECT_JITTER");
        if let Some(j) = self.num::<f64>(&jitter_key)? {
            if !(0.0..=1.0).contains(&j) {
                return Err(EnvError::invalid(
                    &jitter_key,
                    &j.to_string(),
                    "a number between 0 and 1",
                ));
            }
            b = b.reconnect_jitter(j);
        }
        if let Some(d) = self.duration_ms(&key("LINK_REPLAY_WINDOW_MS"))? {
            b = b.replay_window(d);
        }
        if let Some(n) = self.positive(&key("LINK_MAX_RECENT_IDS"))? {
            b = b.max_recent_ids(n);
        }
        if let Some(n) = self.positive(&key("LINK_MAX_MESSAGE_BYTES"))? {
            b = b.max_message_bytes(n);
        }
        if let Some(n) = self.positive(&key("LINK_MAX_BUFFERED_BYTES"))? {
            b = b.max_buffered_bytes(n);
        }
        Ok(b)
    }
}

/// Hub URLs separated by commas (a failover list), each trimmed; an empty
/// entry (`a,,b`, a trailing comma) is an error naming `key`. The error
/// shows the list with each URL's query replaced by `?…`, as a query may
/// carry a token.
pub fn url_list(key: &str, value: &str) -> Result<Vec<String>, EnvError> {
    value
        .split(',')
        .map(|url| match url.trim() {
            "" => Err(EnvError::invalid(
                key,
                &without_queries(value),
                "an empty URL in the comma-separated list",
            )),
            url => Ok(url.to_owned()),
        })
        .collect()
}

/// `value` with every `?query` of its comma-separated URLs cut to `?…`.
fn without_queries(value: &str) -> String {
    value
        .split(',')
        .map(|url| match url.split_once('?') {
            Some((base, _)) => format!("{base}?…"),
            None => url.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// [`Env::num`] on the process environment.
pub fn num<T: EnvNum>(key: &str) -> Result<Option<T>, EnvError> {
    Env::process().num(key)
}

/// [`Env::bool`] on the process environment.
pub fn bool(key: &str) -> Result<Option<bool>, EnvError> {
    Env::process().bool(key)
}

/// [`Env::require`] on the process environment: every missing key in one error.
pub fn require_env(keys: &[&str]) -> Result<(), EnvError> {
    Env::process().require(keys)
}

/// A [`ClientConfigBuilder`] from the process environment. With `prefix`
/// `"BILLING_"` it reads `BILLING_LINK_URL`, `BILLING_LINK_KIND`, … :
///
/// | variable | setter | value |
/// |---|---|---|
/// | `LINK_URL` | `urls` | one hub URL, or several separated by commas (failover, in order) |
/// | `LINK_URL_ORDER` | `url_order` | `ordered` (default) or `random` |
/// | `LINK_KIND`, `LINK_SECRET` | `kind`, `secret` | string (the secret is not trimmed) |
/// | `LINK_HASH_ALGO` | `hash` | `sha256`, `sha384`, `sha512` |
/// | `LINK_PERMESSAGE_DEFLATE` | `per_message_deflate` | bool; `true` is refused (unsupported) |
/// | `LINK_RECONNECT_ON_REJECTION` | `reconnect_on_rejection` | bool |
/// | `LINK_RECONNECT_JITTER` | `reconnect_jitter` | number in 0..=1 |
/// | `LINK_REPLAY_WINDOW_MS` | `replay_window` | ms (0 disables replay protection) |
/// | `LINK_MAX_RECENT_IDS` | `max_recent_ids` | positive integer |
/// | `LINK_MAX_MESSAGE_BYTES` | `max_message_bytes` | positive integer |
/// | `LINK_MAX_BUFFERED_BYTES` | `max_buffered_bytes` | positive integer |
///
/// Unset or blank variables leave the builder's default. Add handlers
/// and call `build()` as usual.
pub fn client_config_from_env(prefix: &str) -> Result<ClientConfigBuilder, EnvError> {
    Env::process().client_config(prefix)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> Env<impl EnvSource> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Env::new(move |k: &str| map.get(k).cloned())
    }

    #[test]
    fn numbers_keep_zero_and_treat_blank_as_missing() {
        let e = env(&[
            ("A", "0"),
            ("B", "  "),
            ("C", " 42 "),
            ("D", "-3"),
            ("F", "2.5"),
        ]);
        assert_eq!(e.num::<u32>("A").unwrap(), Some(0));
        assert_eq!(e.num::<u32>("B").unwrap(), None);
        assert_eq!(e.num::<u32>("NOPE").unwrap(), None);
        assert_eq!(e.num::<u16>("C").unwrap(), Some(42));
        assert_eq!(e.num::<i64>("D").unwrap(), Some(-3));
        assert_eq!(e.num::<f64>("F").unwrap(), Some(2.5));
    }

    #[test]
    fn bad_numbers_name_the_key_and_value() {
        let e = env(&[
            ("P", "80x"),
            ("N", "-1"),
            ("BIG", "70000"),
            ("NAN", "NaN"),
            ("INF", "inf"),
        ]);
        let err = e.num::<u16>("P").unwrap_err();
        assert_eq!(err.code(), "ENV_INVALID");
        let text = err.to_string();
        assert!(text.contains("P=\"80x\""), "{text}");
        assert!(text.contains("u16"), "{text}");
        assert!(e.num::<u32>("N").is_err());
        assert!(e.num::<u16>("BIG").is_err());
        assert!(e.num::<f64>("NAN").is_err());
        assert!(e.num::<f32>("INF").is_err());
    }

    #[test]
    fn booleans_accept_every_spelling_in_any_case() {
        for (v, want) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("Yes", true),
            ("on", true),
            ("false", false),
            ("False", false),
            ("0", false),
            ("NO", false),
            ("Off", false),
            (" off ", false),
        ] {
            assert_eq!(env(&[("X", v)]).bool("X").unwrap(), Some(want), "{v}");
        }
        assert_eq!(env(&[("X", "")]).bool("X").unwrap(), None);
        assert_eq!(env(&[]).bool("X").unwrap(), None);
        let err = env(&[("X", "maybe")]).bool("X").unwrap_err();
        assert!(err.to_string().contains("X=\"maybe\""));
    }

    #[test]
    fn require_lists_every_missing_key() {
        let e = env(&[("A", "1"), ("B", " ")]);
        assert_eq!(e.require(&["A"]), Ok(()));
        let err = e.require(&["A", "B", "C"]).unwrap_err();
        assert_eq!(
            err,
            EnvError::Missing {
                keys: vec!["B".into(), "C".into()]
            }
        );
        assert_eq!(err.code(), "ENV_MISSING");
        assert!(err.to_string().ends_with("B, C"));
    }

    #[test]
    fn client_config_reads_prefixed_variables() {
        let e = env(&[
            ("BILLING_LINK_URL", "ws://127.0.0.1:9"),
            ("BILLING_LINK_KIND", "billing"),
            ("BILLING_LINK_SECRET", " s3cret "),
            ("BILLING_LINK_HASH_ALGO", "SHA512"),
            ("BILLING_LINK_PERMESSAGE_DEFLATE", "false"),
            ("BILLING_LINK_RECONNECT_ON_REJECTION", "yes"),
            ("BILLING_LINK_RECONNECT_JITTER", "0"),
            ("BILLING_LINK_REPLAY_WINDOW_MS", "0"),
            ("BILLING_LINK_MAX_RECENT_IDS", "5"),
            ("BILLING_LINK_MAX_MESSAGE_BYTES", "1024"),
            ("BILLING_LINK_MAX_BUFFERED_BYTES", "2048"),
            ("LINK_URL", "ws://wrong"),
        ]);
        let config = e.client_config("BILLING_").unwrap().build().unwrap();
        assert_eq!(config.url(), Some("ws://127.0.0.1:9"));
        assert_eq!(config.kind(), Some("billing"));
        assert_eq!(config.hash(), HashAlgo::Sha512);
        assert!(!config.is_disabled());
    }

    #[test]
    fn link_url_takes_a_comma_separated_failover_list() {
        let e = env(&[
            ("LINK_URL", " ws://a:1 , wss://b:2/link,ws://c:3 "),
            ("LINK_URL_ORDER", "Random"),
        ]);
        let config = e.client_config("").unwrap().build().unwrap();
        assert_eq!(config.urls(), ["ws://a:1", "wss://b:2/link", "ws://c:3"]);
        assert_eq!(config.url(), Some("ws://a:1"));
        assert_eq!(config.url_order(), UrlOrder::Random);
        let one = env(&[("LINK_URL", "ws://a:1")]).client_config("").unwrap();
        let one = one.build().unwrap();
        assert_eq!(one.urls(), ["ws://a:1"]);
        assert_eq!(one.url_order(), UrlOrder::Ordered);
        for bad in ["ws://a:1,,ws://b:2", "ws://a:1,", ", ws://a:1"] {
            match env(&[("P_LINK_URL", bad)]).client_config("P_") {
                Err(EnvError::Invalid { key, value, .. }) => {
                    assert_eq!((key.as_str(), value.as_str()), ("P_LINK_URL", bad));
                }
                Err(other) => panic!("{bad:?}: {other:?}"),
                Ok(_) => panic!("{bad:?} accepted"),
            }
        }
        let err = url_list("LINK_URL", "ws://a:1/link?token=hunter2,").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("ws://a:1/link?…"), "{err}");
    }

    #[test]
    fn client_config_without_variables_is_disabled() {
        let config = env(&[]).client_config("").unwrap().build().unwrap();
        assert!(config.is_disabled());
    }

    #[test]
    fn client_config_errors_name_the_prefixed_variable() {
        let cases = [
            ("X_LINK_HASH_ALGO", "md5"),
            ("X_LINK_URL_ORDER", "round-robin"),
            ("X_LINK_PERMESSAGE_DEFLATE", "on"),
            ("X_LINK_PERMESSAGE_DEFLATE", "sometimes"),
            ("X_LINK_RECONNECT_ON_REJECTION", "2"),
            ("X_LINK_RECONNECT_JITTER", "1.5"),
            ("X_LINK_RECONNECT_JITTER", "nan"),
            ("X_LINK_REPLAY_WINDOW_MS", "-1"),
            ("X_LINK_MAX_RECENT_IDS", "0"),
            ("X_LINK_MAX_MESSAGE_BYTES", "lots"),
            ("X_LINK_MAX_BUFFERED_BYTES", "0"),
        ];
        for (key, value) in cases {
            match env(&[(key, value)]).client_config("X_") {
                Err(EnvError::Invalid { key: k, .. }) => assert_eq!(k, key, "{value}"),
                Err(other) => panic!("{key}={value}: {other:?}"),
                Ok(_) => panic!("{key}={value} accepted"),
            }
        }
    }
}
