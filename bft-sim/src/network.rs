//! The simulated network: per-seed loss, duplication and exponential delays (which reorder
//! frames), plus timed episodes: partitions, an isolated replica, one-way partitions and clogged
//! links (after TigerBeetle's `packet_simulator.zig`).

use crate::rng::{SimRng, chance, exponential};
use crate::scenario::{EpisodeKind, NetworkProfile};
use bft_core::{ClientId, ReplicaId};
use std::collections::BTreeMap;
use std::time::Duration;

/// A network endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    /// A replica (both instances of a twin).
    Replica(ReplicaId),
    /// A client.
    Client(ClientId),
}

/// What happens to one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transit {
    /// Delivered after each of these delays (two for a duplicate).
    Deliver(Vec<Duration>),
    /// Dropped by an active partition.
    Partitioned,
    /// Lost at random.
    Lost,
}

/// The network's current state.
#[derive(Debug, Clone)]
pub struct Network {
    profile: NetworkProfile,
    /// Active episodes, by index in the scenario.
    active: BTreeMap<usize, EpisodeKind>,
}

impl Network {
    /// A network with `profile` and no active episode.
    pub fn new(profile: NetworkProfile) -> Network {
        Network {
            profile,
            active: BTreeMap::new(),
        }
    }

    /// Starts episode `index`.
    pub fn start(&mut self, index: usize, kind: EpisodeKind) {
        self.active.insert(index, kind);
    }

    /// Heals episode `index` (if still active).
    pub fn end(&mut self, index: usize) {
        self.active.remove(&index);
    }

    /// The liveness phase: every episode heals, nothing is lost or duplicated, and delays stay
    /// short.
    pub fn heal_all(&mut self) {
        self.active.clear();
        self.profile = NetworkProfile {
            loss: 0.0,
            duplicate: 0.0,
            min_delay: self.profile.min_delay.min(Duration::from_millis(1)),
            mean_delay: self.profile.mean_delay.min(Duration::from_millis(5)),
        };
    }

    /// Active episodes.
    pub fn active(&self) -> impl Iterator<Item = &EpisodeKind> {
        self.active.values()
    }

    fn blocked(&self, from: Endpoint, to: Endpoint) -> bool {
        self.active
            .iter()
            .any(|(&index, kind)| blocks(index, kind, from, to))
    }

    fn extra_delay(&self, from: Endpoint, to: Endpoint) -> Duration {
        self.active
            .values()
            .filter_map(|kind| match kind {
                EpisodeKind::Clog { replica, extra }
                    if from == Endpoint::Replica(*replica) || to == Endpoint::Replica(*replica) =>
                {
                    Some(*extra)
                }
                _ => None,
            })
            .max()
            .unwrap_or_default()
    }

    /// Decides the fate of one frame from `from` to `to`.
    pub fn transit(&self, rng: &mut SimRng, from: Endpoint, to: Endpoint) -> Transit {
        if self.blocked(from, to) {
            return Transit::Partitioned;
        }
        if chance(rng, self.profile.loss) {
            return Transit::Lost;
        }
        let copies = if chance(rng, self.profile.duplicate) {
            2
        } else {
            1
        };
        let extra = self.extra_delay(from, to);
        Transit::Deliver(
            (0..copies)
                .map(|_| self.profile.min_delay + exponential(rng, self.profile.mean_delay) + extra)
                .collect(),
        )
    }
}

/// Whether an episode drops frames from `from` to `to`. In a partition, each client reaches one
/// side, chosen by its id and the episode.
fn blocks(index: usize, kind: &EpisodeKind, from: Endpoint, to: Endpoint) -> bool {
    let on_side = |endpoint: Endpoint, side: &std::collections::BTreeSet<ReplicaId>| match endpoint
    {
        Endpoint::Replica(id) => side.contains(&id),
        Endpoint::Client(id) => (id.0 + index as u64).is_multiple_of(2),
    };
    match kind {
        EpisodeKind::Partition { side } => on_side(from, side) != on_side(to, side),
        EpisodeKind::Isolate(id) => from == Endpoint::Replica(*id) || to == Endpoint::Replica(*id),
        EpisodeKind::OneWay {
            from: senders,
            to: receivers,
        } => match (from, to) {
            (Endpoint::Replica(a), Endpoint::Replica(b)) => {
                senders.contains(&a) && receivers.contains(&b)
            }
            _ => false,
        },
        EpisodeKind::Clog { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn calm() -> NetworkProfile {
        NetworkProfile {
            loss: 0.0,
            duplicate: 0.0,
            min_delay: Duration::from_millis(1),
            mean_delay: Duration::from_millis(1),
        }
    }

    #[test]
    fn partitions_block_across_sides_only() {
        let mut network = Network::new(calm());
        let mut rng = SimRng::seed_from_u64(1);
        let r = |i| Endpoint::Replica(ReplicaId(i));
        network.start(
            0,
            EpisodeKind::Partition {
                side: [ReplicaId(0), ReplicaId(1)].into(),
            },
        );
        assert_eq!(network.transit(&mut rng, r(0), r(2)), Transit::Partitioned);
        assert_eq!(network.transit(&mut rng, r(3), r(1)), Transit::Partitioned);
        assert!(matches!(
            network.transit(&mut rng, r(0), r(1)),
            Transit::Deliver(_)
        ));
        assert!(matches!(
            network.transit(&mut rng, r(2), r(3)),
            Transit::Deliver(_)
        ));
        network.end(0);
        assert!(matches!(
            network.transit(&mut rng, r(0), r(2)),
            Transit::Deliver(_)
        ));
    }

    #[test]
    fn one_way_partitions_and_isolation() {
        let mut network = Network::new(calm());
        let mut rng = SimRng::seed_from_u64(2);
        let r = |i| Endpoint::Replica(ReplicaId(i));
        network.start(
            3,
            EpisodeKind::OneWay {
                from: [ReplicaId(0)].into(),
                to: [ReplicaId(1)].into(),
            },
        );
        assert_eq!(network.transit(&mut rng, r(0), r(1)), Transit::Partitioned);
        assert!(matches!(
            network.transit(&mut rng, r(1), r(0)),
            Transit::Deliver(_)
        ));
        network.start(4, EpisodeKind::Isolate(ReplicaId(2)));
        let client = Endpoint::Client(ClientId(1));
        assert_eq!(
            network.transit(&mut rng, client, r(2)),
            Transit::Partitioned
        );
        assert_eq!(network.transit(&mut rng, r(2), r(3)), Transit::Partitioned);
        network.heal_all();
        assert!(matches!(
            network.transit(&mut rng, r(0), r(1)),
            Transit::Deliver(_)
        ));
    }

    #[test]
    fn clogs_delay_and_loss_drops() {
        let mut network = Network::new(calm());
        let mut rng = SimRng::seed_from_u64(3);
        let r = |i| Endpoint::Replica(ReplicaId(i));
        network.start(
            0,
            EpisodeKind::Clog {
                replica: ReplicaId(1),
                extra: Duration::from_secs(2),
            },
        );
        let Transit::Deliver(delays) = network.transit(&mut rng, r(0), r(1)) else {
            panic!("a clog delays, it does not drop");
        };
        assert!(delays.iter().all(|d| *d >= Duration::from_secs(2)));
        let lossy = Network::new(NetworkProfile {
            loss: 1.0,
            ..calm()
        });
        assert_eq!(lossy.transit(&mut rng, r(0), r(1)), Transit::Lost);
        let duplicating = Network::new(NetworkProfile {
            duplicate: 1.0,
            ..calm()
        });
        let Transit::Deliver(delays) = duplicating.transit(&mut rng, r(0), r(1)) else {
            panic!("delivered");
        };
        assert_eq!(delays.len(), 2);
    }
}
