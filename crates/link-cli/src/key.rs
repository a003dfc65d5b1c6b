//! The key options shared by every subcommand that signs or verifies:
//! `--secret` (or `LINK_SECRET`) and `--hash`.
//!
//! The secret is never printed: `Debug` is redacted, clap is told to hide
//! the environment value in `--help`, and errors name the option, not its
//! value.

use std::fmt;

use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use link_protocol::{HashAlgo, Key};

use crate::exit::Failure;

/// `--secret` and `--hash`, turned into a [`Key`] by [`KeyArgs::key`].
#[derive(Args)]
pub(crate) struct KeyArgs {
    /// Shared secret (the HMAC key). Prefer setting LINK_SECRET: command-line
    /// arguments are visible to other local users.
    #[arg(
        long,
        env = "LINK_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    secret: Option<String>,

    /// HMAC hash algorithm; both ends must agree.
    #[arg(
        long,
        value_name = "ALGO",
        default_value = "sha256",
        ignore_case = true,
        value_parser = PossibleValuesParser::new(["sha256", "sha384", "sha512"])
            .try_map(|name| name.parse::<HashAlgo>()),
    )]
    hash: HashAlgo,
}

impl KeyArgs {
    /// Builds the key; a missing or empty secret is unusable (exit 2).
    pub(crate) fn key(&self) -> Result<Key, Failure> {
        let Some(secret) = &self.secret else {
            return Err(Failure::unusable(
                "no secret: pass --secret or set LINK_SECRET",
            ));
        };
        Key::new(secret, self.hash).map_err(|e| Failure::unusable(format_args!("--secret: {e}")))
    }
}

impl fmt::Debug for KeyArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyArgs")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("hash", &self.hash)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_secret() {
        let args = KeyArgs {
            secret: Some("hunter2".into()),
            hash: HashAlgo::Sha384,
        };
        let shown = format!("{args:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redacted") && shown.contains("Sha384"));
    }

    #[test]
    fn missing_or_empty_secret_is_refused() {
        let mut args = KeyArgs {
            secret: None,
            hash: HashAlgo::Sha256,
        };
        assert!(args.key().is_err());
        args.secret = Some(String::new());
        assert!(args.key().is_err());
        args.secret = Some("k".into());
        assert_eq!(args.key().unwrap().algo(), HashAlgo::Sha256);
    }
}
