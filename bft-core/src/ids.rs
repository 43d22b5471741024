//! Identifiers and the logical clock value the core is stepped with.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// A replica's index in the cluster configuration (0 to n-1).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReplicaId(pub u32);

/// A client's id, as admitted by the cluster configuration.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientId(pub u64);

/// A view number. The primary of view `v` is replica `v mod n` (PBFT section 4.1).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct View(pub u64);

/// A sequence number assigned by the primary to a batch of requests.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct SeqNum(pub u64);

/// Who sent a message: a replica or a client.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Principal {
    /// A cluster member.
    Replica(ReplicaId),
    /// A client.
    Client(ClientId),
}

impl View {
    /// The primary of this view in a cluster of `n` replicas.
    pub fn primary(self, n: usize) -> ReplicaId {
        ReplicaId((self.0 % n as u64) as u32)
    }

    /// The next view (saturating: views never wrap).
    pub fn next(self) -> View {
        View(self.0.saturating_add(1))
    }
}

impl SeqNum {
    /// The next sequence number (saturating: sequence numbers never wrap).
    pub fn next(self) -> SeqNum {
        SeqNum(self.0.saturating_add(1))
    }
}

impl Principal {
    /// The role byte covered by signatures (see `bft_crypto::SignatureDomain`).
    pub fn role_byte(self) -> u8 {
        match self {
            Principal::Replica(_) => 1,
            Principal::Client(_) => 2,
        }
    }

    /// The id covered by signatures.
    pub fn id_u64(self) -> u64 {
        match self {
            Principal::Replica(r) => u64::from(r.0),
            Principal::Client(c) => c.0,
        }
    }
}

macro_rules! debug_as {
    ($ty:ty, $prefix:literal) => {
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}
debug_as!(ReplicaId, "r");
debug_as!(ClientId, "c");
debug_as!(View, "v");
debug_as!(SeqNum, "n");

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Replica(r) => write!(f, "{r:?}"),
            Principal::Client(c) => write!(f, "{c:?}"),
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A point in time, in nanoseconds since an epoch the driver chooses (its start, say).
///
/// The core never reads a clock: the driver passes `Time` into every step. A simulator passes
/// virtual time; a real driver converts `std::time::Instant` relative to its own start.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(u64);

impl Time {
    /// The epoch.
    pub const ZERO: Time = Time(0);

    /// A time `nanos` nanoseconds after the epoch.
    pub fn from_nanos(nanos: u64) -> Time {
        Time(nanos)
    }

    /// Nanoseconds since the epoch.
    pub fn as_nanos(self) -> u64 {
        self.0
    }

    /// Time elapsed since `earlier` (zero if `earlier` is later).
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl std::ops::Add<Duration> for Time {
    type Output = Time;
    fn add(self, rhs: Duration) -> Time {
        let nanos = u64::try_from(rhs.as_nanos()).unwrap_or(u64::MAX);
        Time(self.0.saturating_add(nanos))
    }
}

impl fmt::Debug for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", Duration::from_nanos(self.0))
    }
}
