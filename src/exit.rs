//! Process exit statuses. Documented in README.md ("Exit codes"); keep the two in step.

/// How the process ends.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// Everything asked for was done (or, for `plan --detailed-exitcode`, nothing to change).
    Success,
    /// A cloud or runtime operation failed (some agents may have succeeded).
    Failure,
    /// `plan --detailed-exitcode`: the plan has changes.
    Changes,
    /// The project or stack files, or command-line input, are invalid. Nothing was touched.
    Config,
    /// A secret could not be decrypted or resolved. Nothing was touched.
    Secrets,
    /// The user declined the confirmation. Nothing was touched.
    Declined,
    /// The state lock is held by another run.
    Locked,
    /// Command-line usage error (unknown flag, missing argument).
    Usage,
    /// A bug in agent-army.
    Internal,
    /// Interrupted by Ctrl-C / SIGTERM.
    Interrupted,
}

impl ExitStatus {
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Changes => 2,
            ExitStatus::Config => 3,
            ExitStatus::Secrets => 4,
            ExitStatus::Declined => 5,
            ExitStatus::Locked => 6,
            ExitStatus::Usage => 64,
            ExitStatus::Internal => 70,
            ExitStatus::Interrupted => 130,
        }
    }
}
