//! What one seed runs: the cluster, the workload and the faults, all drawn from the seed so that
//! different seeds stress different mixes (TigerBeetle's VOPR draws its fault probabilities per
//! seed in the same way).

use crate::byzantine::Attack;
use crate::rng::{SimRng, chance, pick};
use bft_core::ReplicaId;
use rand::{RngExt, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

/// Every client must finish its operations within this much virtual time after the faults heal
/// (view-change timeouts start at 1 s and double per failed attempt, so this allows several
/// consecutive faulty primaries).
pub const LIVENESS_LIMIT: Duration = Duration::from_secs(120);

/// A bug to plant, to prove that the checkers can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Canary {
    /// A bug planted in `bft-core` (needs the `canaries` feature).
    Core(bft_core::planted::PlantedBug),
    /// A replica restarts with none of what it signed, but is treated as correct (not counted
    /// against f): what a replica without durable storage does.
    ForgetSignedOnRestart,
}

impl Canary {
    /// Every canary.
    pub fn all() -> Vec<Canary> {
        let mut all: Vec<Canary> = bft_core::planted::PlantedBug::ALL
            .into_iter()
            .map(Canary::Core)
            .collect();
        all.push(Canary::ForgetSignedOnRestart);
        all
    }

    /// The canary's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Canary::Core(bug) => bug.name(),
            Canary::ForgetSignedOnRestart => "forget-signed-on-restart",
        }
    }

    /// The canary named `name`.
    pub fn from_name(name: &str) -> Option<Canary> {
        Canary::all().into_iter().find(|c| c.name() == name)
    }
}

/// What the caller fixes; everything else comes from the seed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Force the number of replicas (4 or 7); by default one seed in four runs 7.
    pub replicas: Option<usize>,
    /// Plant a bug.
    pub canary: Option<Canary>,
}

impl Options {
    /// The command-line flags that select these options (for replay commands).
    pub fn flags(&self) -> String {
        let mut flags = String::new();
        if let Some(n) = self.replicas {
            flags.push_str(&format!(" --replicas {n}"));
        }
        if let Some(canary) = self.canary {
            flags.push_str(&format!(" --canary {}", canary.name()));
        }
        flags
    }
}

/// Per-link behaviour of the network outside episodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetworkProfile {
    /// Probability that a frame is lost.
    pub loss: f64,
    /// Probability that a frame is delivered twice.
    pub duplicate: f64,
    /// Fixed part of every delay.
    pub min_delay: Duration,
    /// Mean of the exponential part of every delay (frames overtake each other: reordering).
    pub mean_delay: Duration,
}

/// A network fault that starts and later heals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EpisodeKind {
    /// The replicas split in two groups that cannot talk; each client reaches one group.
    Partition {
        /// One side (the other replicas form the other side).
        side: BTreeSet<ReplicaId>,
    },
    /// One replica can neither send nor receive.
    Isolate(ReplicaId),
    /// Frames from `from` to `to` are dropped; the other direction works.
    OneWay {
        /// Senders whose frames are dropped.
        from: BTreeSet<ReplicaId>,
        /// Receivers that do not get them.
        to: BTreeSet<ReplicaId>,
    },
    /// Every frame to or from a replica is delayed by `extra` (a clogged link).
    Clog {
        /// The replica.
        replica: ReplicaId,
        /// The added delay.
        extra: Duration,
    },
}

impl EpisodeKind {
    /// A short name for fault counts.
    pub fn name(&self) -> &'static str {
        match self {
            EpisodeKind::Partition { .. } => "partition",
            EpisodeKind::Isolate(_) => "isolate",
            EpisodeKind::OneWay { .. } => "one-way-partition",
            EpisodeKind::Clog { .. } => "clog",
        }
    }
}

/// A network fault active over `[start, end)` of the safety phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Episode {
    /// When it starts.
    pub start: Duration,
    /// When it heals.
    pub end: Duration,
    /// What it is.
    pub kind: EpisodeKind,
}

/// How a faulty replica misbehaves (at most f replicas are faulty).
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The replica crashes at `at` and, if `restart_after` is set, comes back empty after that
    /// long (without durable storage it forgets what it signed, so it counts against f). Every
    /// crashed replica restarts when the liveness phase begins.
    Crash {
        /// When it crashes.
        at: Duration,
        /// Downtime before it restarts within the safety phase.
        restart_after: Option<Duration>,
    },
    /// The replica runs the real protocol with its real key, but corrupts what it sends.
    Byzantine {
        /// Two instances with one identity and key (Twins): each correct replica talks to one.
        twin: bool,
        /// Probability that a frame it sends is corrupted.
        attack_rate: f64,
        /// The attacks it picks from.
        attacks: Vec<Attack>,
        /// Probability that it leaves out a destination of a multicast.
        selective_send: f64,
    },
}

/// Where a crash of a correct replica (with durable storage) strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Between two steps: everything persisted, everything sent.
    BetweenSteps,
    /// In a step, after its records are durable and before any of its frames leave.
    BeforeSend,
    /// In a step, while its records are written: a prefix is durable, the rest is lost, nothing
    /// is sent (a torn write).
    TornWrite,
}

impl CrashPoint {
    /// A short name, for fault counts.
    pub fn name(self) -> &'static str {
        match self {
            CrashPoint::BetweenSteps => "crash-correct-between-steps",
            CrashPoint::BeforeSend => "crash-correct-before-send",
            CrashPoint::TornWrite => "crash-correct-torn-write",
        }
    }
}

/// A crash of a replica that is not faulty: it restarts from its durable storage and stays
/// correct, so it does not count against f. Several may overlap, down to every replica at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurableCrash {
    /// The replica.
    pub replica: ReplicaId,
    /// When it crashes (a crash inside a step strikes at its next step).
    pub at: Duration,
    /// How long it stays down.
    pub down: Duration,
    /// Where it strikes.
    pub point: CrashPoint,
}

/// Everything one seed runs.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The seed.
    pub seed: u64,
    /// The fixed options.
    pub options: Options,
    /// Faults tolerated: n = 3f + 1.
    pub f: usize,
    /// Correct clients.
    pub clients: u64,
    /// Whether a Byzantine client (reused timestamps, conflicting requests) joins.
    pub byzantine_client: bool,
    /// Keys the correct clients use.
    pub keys: usize,
    /// Operations each client submits during the safety phase.
    pub safety_ops: usize,
    /// Operations each client must complete after the faults heal.
    pub liveness_ops: usize,
    /// Mean think time between a client's operations in the safety phase.
    pub think_time: Duration,
    /// Length of the safety phase (faults on).
    pub safety_phase: Duration,
    /// The liveness bound: every client finishes within this after the faults heal.
    pub liveness_limit: Duration,
    /// Checkpoint interval K.
    pub checkpoint_interval: u64,
    /// Window L.
    pub window: u64,
    /// Requests per batch.
    pub max_batch_requests: usize,
    /// The network outside episodes (safety phase).
    pub network: NetworkProfile,
    /// Timed network faults.
    pub episodes: Vec<Episode>,
    /// Faulty replicas.
    pub faulty: BTreeMap<ReplicaId, Fault>,
    /// The replica that forgets what it signed (the canary of the same name).
    pub amnesiac: Option<(ReplicaId, Duration, Duration)>,
    /// Crashes of correct replicas, which recover from durable storage.
    pub durable_crashes: Vec<DurableCrash>,
}

impl Scenario {
    /// The scenario of `seed` under `options`.
    pub fn generate(seed: u64, options: &Options) -> Scenario {
        let mut rng = SimRng::seed_from_u64(seed ^ 0x5ce7_a810);
        let f = match options.replicas {
            Some(n) => (n - 1) / 3,
            None if chance(&mut rng, 0.25) => 2,
            None => 1,
        };
        let n = 3 * f + 1;
        let safety_phase = Duration::from_millis(rng.random_range(2_000..12_000));
        let ms = |rng: &mut SimRng, range: std::ops::Range<u64>| {
            Duration::from_millis(rng.random_range(range))
        };
        let network = NetworkProfile {
            loss: *pick(&mut rng, &[0.0, 0.0, 0.01, 0.05, 0.15]),
            duplicate: *pick(&mut rng, &[0.0, 0.01, 0.05]),
            min_delay: Duration::from_micros(rng.random_range(50..2_000)),
            mean_delay: Duration::from_micros(*pick(&mut rng, &[200, 2_000, 10_000, 60_000])),
        };
        let replica = |rng: &mut SimRng| ReplicaId(rng.random_range(0..n as u32));
        let mut episodes = Vec::new();
        let episode_count = *pick(&mut rng, &[0usize, 1, 2, 4, 8]);
        for _ in 0..episode_count {
            let start = ms(&mut rng, 0..safety_phase.as_millis() as u64);
            let end = start + ms(&mut rng, 100..4_000);
            let kind = match rng.random_range(0..4) {
                0 => EpisodeKind::Partition {
                    side: (0..n as u32)
                        .map(ReplicaId)
                        .filter(|_| chance(&mut rng, 0.5))
                        .collect(),
                },
                1 => EpisodeKind::Isolate(replica(&mut rng)),
                2 => EpisodeKind::OneWay {
                    from: (0..n as u32)
                        .map(ReplicaId)
                        .filter(|_| chance(&mut rng, 0.4))
                        .collect(),
                    to: (0..n as u32)
                        .map(ReplicaId)
                        .filter(|_| chance(&mut rng, 0.5))
                        .collect(),
                },
                _ => EpisodeKind::Clog {
                    replica: replica(&mut rng),
                    extra: ms(&mut rng, 200..3_000),
                },
            };
            episodes.push(Episode { start, end, kind });
        }
        episodes.sort_by_key(|e| e.start);

        let mut faulty = BTreeMap::new();
        let mut candidates: Vec<ReplicaId> = (0..n as u32).map(ReplicaId).collect();
        let faulty_count = rng.random_range(0..=f);
        for _ in 0..faulty_count {
            let id = candidates.remove(rng.random_range(0..candidates.len()));
            let fault = if chance(&mut rng, 0.35) {
                Fault::Crash {
                    at: ms(&mut rng, 0..safety_phase.as_millis() as u64),
                    restart_after: chance(&mut rng, 0.6).then(|| ms(&mut rng, 100..3_000)),
                }
            } else {
                let attacks: Vec<Attack> = Attack::ALL
                    .into_iter()
                    .filter(|_| chance(&mut rng, 0.5))
                    .collect();
                Fault::Byzantine {
                    twin: chance(&mut rng, 0.4),
                    attack_rate: *pick(&mut rng, &[0.0, 0.05, 0.2, 0.5]),
                    attacks,
                    selective_send: *pick(&mut rng, &[0.0, 0.0, 0.1, 0.5]),
                }
            };
            faulty.insert(id, fault);
        }
        let amnesiac = (options.canary == Some(Canary::ForgetSignedOnRestart)).then(|| {
            let id = candidates.remove(rng.random_range(0..candidates.len()));
            let at = ms(&mut rng, 0..safety_phase.as_millis() as u64);
            (id, at, ms(&mut rng, 10..1_000))
        });
        let checkpoint_interval = *pick(&mut rng, &[4u64, 8, 16]);
        let clients = rng.random_range(1..=4);
        let byzantine_client = chance(&mut rng, 0.3);
        let keys = rng.random_range(1..=4);
        let safety_ops = rng.random_range(5..=30);
        let think_time = ms(&mut rng, 1..400);
        let window = checkpoint_interval * *pick(&mut rng, &[2u64, 4]);
        let max_batch_requests = *pick(&mut rng, &[1usize, 4, 16]);
        // Drawn last, so the rest of a seed's scenario is what it was before durable crashes.
        let mut durable_crashes = Vec::new();
        if !candidates.is_empty() {
            for _ in 0..*pick(&mut rng, &[0usize, 0, 1, 2, 3, 6]) {
                let point = *pick(
                    &mut rng,
                    &[
                        CrashPoint::BetweenSteps,
                        CrashPoint::BeforeSend,
                        CrashPoint::TornWrite,
                    ],
                );
                durable_crashes.push(DurableCrash {
                    replica: *pick(&mut rng, &candidates),
                    at: ms(&mut rng, 0..safety_phase.as_millis() as u64),
                    down: ms(&mut rng, 10..3_000),
                    point,
                });
            }
        }
        Scenario {
            seed,
            options: options.clone(),
            f,
            clients,
            byzantine_client,
            keys,
            safety_ops,
            liveness_ops: 3,
            think_time,
            safety_phase,
            liveness_limit: LIVENESS_LIMIT,
            checkpoint_interval,
            window,
            max_batch_requests,
            network,
            episodes,
            faulty,
            amnesiac,
            durable_crashes,
        }
    }

    /// The number of replicas.
    pub fn n(&self) -> usize {
        3 * self.f + 1
    }

    /// The command that replays this seed with a trace.
    pub fn replay_command(&self) -> String {
        format!(
            "cargo run --release -p bft-sim{} -- --seed {}{} --trace",
            if self.options.canary.is_some() {
                " --features canaries"
            } else {
                ""
            },
            self.seed,
            self.options.flags()
        )
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            out,
            "seed {} (n={} f={}){}",
            self.seed,
            self.n(),
            self.f,
            self.options.flags()
        )?;
        writeln!(
            out,
            "  workload: {} clients, each up to {} ops in the safety phase then {} more, on {} keys, think {:?}, byzantine client: {}",
            self.clients,
            self.safety_ops,
            self.liveness_ops,
            self.keys,
            self.think_time,
            self.byzantine_client
        )?;
        writeln!(
            out,
            "  protocol: K={} L={} batch<={}; safety phase {:?}, liveness bound {:?}",
            self.checkpoint_interval,
            self.window,
            self.max_batch_requests,
            self.safety_phase,
            self.liveness_limit
        )?;
        writeln!(out, "  network: {:?}", self.network)?;
        for episode in &self.episodes {
            writeln!(
                out,
                "  episode {:?}..{:?}: {:?}",
                episode.start, episode.end, episode.kind
            )?;
        }
        for (id, fault) in &self.faulty {
            writeln!(out, "  faulty {id}: {fault:?}")?;
        }
        if let Some((id, at, down)) = self.amnesiac {
            writeln!(
                out,
                "  amnesiac {id}: crashes at {at:?}, restarts empty after {down:?}"
            )?;
        }
        for crash in &self.durable_crashes {
            writeln!(
                out,
                "  correct {} crashes at {:?} ({:?}), recovers after {:?}",
                crash.replica, crash.at, crash.point, crash.down
            )?;
        }
        Ok(())
    }
}
