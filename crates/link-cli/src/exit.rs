//! Exit statuses and the error every subcommand returns.
//!
//! One convention for the whole CLI, so scripts can tell a verdict from a
//! mistake:
//!
//! | status | meaning                                                          |
//! |--------|------------------------------------------------------------------|
//! | 0      | success                                                          |
//! | 1      | the input was understood and failed a check (`bad-signature`)    |
//! | 2      | the input or the invocation is unusable (bad JSON, no secret, …) |
//!
//! clap itself exits 2 on usage errors, which fits the same table.

use std::fmt;
use std::io;
use std::process::ExitCode;

/// How a run ended. Ordered from best to worst, so a batch keeps the `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Status {
    /// Everything succeeded (exit 0).
    Ok,
    /// A well-formed input failed a check (exit 1).
    Rejected,
    /// An input or option could not be used at all (exit 2).
    Unusable,
}

impl Status {
    /// The process exit status.
    pub(crate) const fn code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Rejected => 1,
            Self::Unusable => 2,
        }
    }
}

/// A run that stopped with a message for stderr.
///
/// The message never contains the secret: it is built only from reason
/// codes, parser errors and I/O errors.
#[derive(Debug)]
pub(crate) struct Failure {
    status: Status,
    message: String,
}

impl Failure {
    /// A verdict: the input was understood and failed a check (exit 1).
    pub(crate) fn rejected(message: impl fmt::Display) -> Self {
        Self {
            status: Status::Rejected,
            message: message.to_string(),
        }
    }

    /// Unusable input or options (exit 2).
    pub(crate) fn unusable(message: impl fmt::Display) -> Self {
        Self {
            status: Status::Unusable,
            message: message.to_string(),
        }
    }

    /// stdin could not be read (exit 2).
    pub(crate) fn read(err: &io::Error) -> Self {
        Self::unusable(format_args!("cannot read stdin: {err}"))
    }

    /// stdout could not be written (exit 2).
    pub(crate) fn write(err: &io::Error) -> Self {
        Self::unusable(format_args!("cannot write stdout: {err}"))
    }
}

/// Prints a failure as `link-cli <command>: <message>` and returns the
/// exit status.
pub(crate) fn finish(command: &str, result: Result<Status, Failure>) -> ExitCode {
    let status = match result {
        Ok(status) => status,
        Err(failure) => {
            eprintln!("link-cli {command}: {}", failure.message);
            failure.status
        }
    };
    ExitCode::from(status.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_status_wins() {
        let all = [Status::Ok, Status::Unusable, Status::Rejected];
        assert_eq!(all.into_iter().max(), Some(Status::Unusable));
        assert_eq!(Status::Ok.max(Status::Rejected), Status::Rejected);
        assert_eq!(
            [Status::Ok, Status::Rejected, Status::Unusable].map(Status::code),
            [0, 1, 2]
        );
    }
}
