//! Known bugs that a test can plant, to prove that the simulator's checkers catch them (a checker
//! that never fails proves nothing).
//!
//! The switches exist only with the `planted-bugs` cargo feature, and even then every bug is off
//! until [`plant`] turns one on for the calling thread. Without the feature, [`is_planted`] is a
//! constant `false` and the compiler removes the planted code paths.

/// A bug that can be planted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PlantedBug {
    /// NEW-VIEW ignores prepared certificates: every sequence number between min-s and max-s gets
    /// a null request, so a batch committed in an earlier view can be replaced (breaks PBFT
    /// section 4.4's safety argument).
    NewViewIgnoresPrepared,
    /// A backup accepts a second, conflicting pre-prepare for a (view, sequence number) it already
    /// accepted, and prepares it too (breaks section 4.2's rule that a backup accepts one).
    AcceptConflictingPrePrepare,
    /// The per-peer buffer of messages for future views has no limit.
    UnboundedFutureBuffer,
    /// Recovery restores the stored checkpoint but skips the log records after it, so a restarted
    /// replica forgets what it signed and accepted since (breaks durability).
    RecoverySkipsLog,
}

impl PlantedBug {
    /// Every plantable bug.
    pub const ALL: [PlantedBug; 4] = [
        PlantedBug::NewViewIgnoresPrepared,
        PlantedBug::AcceptConflictingPrePrepare,
        PlantedBug::UnboundedFutureBuffer,
        PlantedBug::RecoverySkipsLog,
    ];

    /// A short name for command lines.
    pub fn name(self) -> &'static str {
        match self {
            PlantedBug::NewViewIgnoresPrepared => "new-view-ignores-prepared",
            PlantedBug::AcceptConflictingPrePrepare => "accept-conflicting-pre-prepare",
            PlantedBug::UnboundedFutureBuffer => "unbounded-future-buffer",
            PlantedBug::RecoverySkipsLog => "recovery-skips-log",
        }
    }
}

/// Whether this build can plant bugs (the `planted-bugs` feature).
pub const AVAILABLE: bool = cfg!(feature = "planted-bugs");

/// Planting needs the `planted-bugs` feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bugs can only be planted in a build with the `planted-bugs` feature")]
pub struct NotAvailable;

#[cfg(feature = "planted-bugs")]
thread_local! {
    static PLANTED: std::cell::Cell<Option<PlantedBug>> = const { std::cell::Cell::new(None) };
}

/// Plants `bug` (or removes any with `None`) for every replica stepped on the calling thread.
/// Without the `planted-bugs` feature, only `None` is accepted.
pub fn plant(bug: Option<PlantedBug>) -> Result<(), NotAvailable> {
    #[cfg(feature = "planted-bugs")]
    PLANTED.with(|planted| planted.set(bug));
    #[cfg(not(feature = "planted-bugs"))]
    if bug.is_some() {
        return Err(NotAvailable);
    }
    Ok(())
}

/// Whether `bug` is planted on the calling thread.
#[cfg(feature = "planted-bugs")]
pub fn is_planted(bug: PlantedBug) -> bool {
    PLANTED.with(|planted| planted.get() == Some(bug))
}

/// Whether `bug` is planted: never, without the `planted-bugs` feature.
#[cfg(not(feature = "planted-bugs"))]
#[inline(always)]
pub fn is_planted(_bug: PlantedBug) -> bool {
    false
}
