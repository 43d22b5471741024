//! The client state machine (PBFT, Castro and Liskov, OSDI'99 section 4.1): one outstanding
//! request, accepted once f+1 replicas sent matching replies, the view learned from replies, and
//! retransmission to every replica after a timeout.
//!
//! Replies are built unsigned, as replicas send them, and passed through the real `Verifier` as
//! coming on the replica's authenticated channel, as a driver does. Time is a value: the tests
//! pick it.

use bft_core::testkit as harness;

use bft_core::messages::{Prepare, Reply, Request, WireMessage};
use bft_core::{
    Client, ClientActions, ClientError, ClientId, ClientInput, ClientRejection, ClusterConfig,
    Completed, Destination, Outcome, Outgoing, Principal, ReplicaId, SeqNum, Time, VerifiedMessage,
    Verifier, View,
};
use bft_crypto::Digest;
use bytes::Bytes;
use harness::{client_key, replica_key};
use std::sync::Arc;
use std::time::Duration;

/// The cluster id `harness::config` uses.
const CLUSTER: u64 = 7;

struct Fixture {
    config: Arc<ClusterConfig>,
    verifier: Verifier,
}

impl Fixture {
    /// n = 3f+1 replicas and clients 1 and 2.
    fn new(f: usize) -> Fixture {
        let config = Arc::new(harness::config(f, 2));
        let verifier = Verifier::new(config.clone()).expect("valid configuration");
        Fixture { config, verifier }
    }

    /// Client `id` (admitted), starting at timestamp 1.
    fn client(&self, id: u64) -> Client {
        Client::new(self.config.clone(), ClientId(id), client_key(id), 1).expect("valid client")
    }

    /// A verified reply from `replica`.
    fn reply(
        &self,
        replica: u32,
        view: u64,
        client: u64,
        timestamp: u64,
        outcome: &Outcome,
    ) -> ClientInput {
        let sender = Principal::Replica(ReplicaId(replica));
        let frame = Reply {
            view: View(view),
            client: ClientId(client),
            timestamp,
            outcome: outcome.clone(),
        }
        .unsigned(CLUSTER, sender);
        ClientInput::Message(
            self.verifier
                .verify_from(sender, frame)
                .expect("a valid reply"),
        )
    }

    /// The request a client frame carries, after verification.
    fn request(&self, frame: &Bytes) -> (Principal, Request) {
        match self.verifier.verify(frame.clone()) {
            Ok(VerifiedMessage::Request(request)) => (request.sender(), request.message().clone()),
            other => panic!("not a request: {other:?}"),
        }
    }
}

fn ok(bytes: &[u8]) -> Outcome {
    Outcome::Ok(bytes.to_vec())
}

fn at(millis: u64) -> Time {
    Time::ZERO + Duration::from_millis(millis)
}

/// Asserts a step did nothing: no frame, no completion, no rejection.
fn assert_nothing(actions: &ClientActions) {
    assert!(actions.send.is_empty(), "{:?}", actions.send);
    assert_eq!(actions.completed, None);
    assert_eq!(actions.rejected, None);
}

/// Asserts a step refused its input for `reason` and did nothing else.
fn assert_refused(actions: &ClientActions, reason: ClientRejection) {
    assert_eq!(actions.rejected, Some(reason));
    assert!(actions.send.is_empty(), "{:?}", actions.send);
    assert_eq!(actions.completed, None);
}

/// Section 4.1 ("the client waits for f+1 replies with valid signatures from different replicas,
/// and with the same t and r"): with f = 1, the request goes to every replica (the primary
/// proposes it, the backups keep it to recognise it in the pre-prepare), one reply
/// does not complete it, and a second matching reply completes it with that outcome and the
/// latency since submission. The client is then idle and its next timestamp is larger.
#[test]
fn f_plus_one_matching_replies_complete_a_request() {
    let fx = Fixture::new(1);
    let mut client = fx.client(1);
    let actions = client.submit(at(1), b"op".to_vec()).expect("idle client");
    let destinations: Vec<Destination> = actions.send.iter().map(|o| o.to).collect();
    assert_eq!(
        destinations,
        (0..4)
            .map(|r| Destination::Replica(ReplicaId(r)))
            .collect::<Vec<_>>()
    );
    assert!(
        actions
            .send
            .iter()
            .all(|o| o.frame == actions.send[0].frame)
    );
    let (sender, request) = fx.request(&actions.send[0].frame);
    assert_eq!(sender, Principal::Client(ClientId(1)));
    assert_eq!(
        request,
        Request {
            timestamp: 1,
            operation: b"op".to_vec()
        }
    );
    assert!(client.is_busy());

    let outcome = ok(b"result");
    assert_nothing(&client.step(at(2), fx.reply(1, 0, 1, 1, &outcome)));
    assert!(client.is_busy(), "one reply is not enough with f = 1");

    let actions = client.step(at(6), fx.reply(2, 0, 1, 1, &outcome));
    assert_eq!(
        actions.completed,
        Some(Completed {
            timestamp: 1,
            outcome: outcome.clone(),
            latency: Duration::from_millis(5),
        })
    );
    assert!(actions.send.is_empty() && actions.rejected.is_none());
    assert!(!client.is_busy());
    assert_eq!(client.poll_timeout(), None);
    assert_eq!(client.next_timestamp(), Some(2));
    // A late reply to the completed request is not expected any more.
    assert_refused(
        &client.step(at(7), fx.reply(3, 0, 1, 1, &outcome)),
        ClientRejection::Unexpected,
    );
    // The next request carries the next timestamp.
    let actions = client.submit(at(8), b"op 2".to_vec()).expect("idle client");
    assert_eq!(fx.request(&actions.send[0].frame).1.timestamp, 2);
}

/// Section 4.1 with f = 2 (n = 7): f+1 = 3 matching replies are needed; two are not enough.
/// A `ServicePanicked` outcome is an outcome like any other.
#[test]
fn f_plus_one_is_three_with_f_two() {
    let fx = Fixture::new(2);
    let mut client = fx.client(2);
    let _ = client
        .submit(at(0), b"panic".to_vec())
        .expect("idle client");
    let outcome = Outcome::ServicePanicked;
    assert_nothing(&client.step(at(1), fx.reply(6, 0, 2, 1, &outcome)));
    assert_nothing(&client.step(at(1), fx.reply(0, 0, 2, 1, &outcome)));
    assert!(client.is_busy());
    let actions = client.step(at(3), fx.reply(4, 0, 2, 1, &outcome));
    assert_eq!(
        actions.completed,
        Some(Completed {
            timestamp: 1,
            outcome,
            latency: Duration::from_millis(3),
        })
    );
}

/// Section 4.1 (f+1 replies "with the same result": at most f are faulty, so one of them is
/// correct): a Byzantine replica's different outcome does not count toward another one. With
/// f = 1, (r3: X) and (r0: Y) do not complete; (r1: Y) completes with Y.
#[test]
fn a_different_reply_does_not_count_toward_the_matching_one() {
    let fx = Fixture::new(1);
    let mut client = fx.client(1);
    let _ = client.submit(at(0), b"op".to_vec()).expect("idle client");
    let (x, y) = (ok(b"X"), ok(b"Y"));
    assert_nothing(&client.step(at(1), fx.reply(3, 0, 1, 1, &x)));
    assert_nothing(&client.step(at(2), fx.reply(0, 0, 1, 1, &y)));
    assert!(client.is_busy(), "X and Y are one vote each");
    let actions = client.step(at(3), fx.reply(1, 0, 1, 1, &y));
    assert_eq!(actions.completed.map(|c| c.outcome), Some(y));
}

/// Section 4.1 (replies from *different* replicas): a replica cannot vote twice. With f = 1, a
/// second reply from r0, identical or with another outcome, is `Duplicate` and completes nothing;
/// r0's first answer stays and completes the request with r2's matching reply.
#[test]
fn a_replica_cannot_vote_twice() {
    let fx = Fixture::new(1);
    let mut client = fx.client(1);
    let _ = client.submit(at(0), b"op".to_vec()).expect("idle client");
    let (y, z) = (ok(b"Y"), ok(b"Z"));
    assert_nothing(&client.step(at(1), fx.reply(0, 0, 1, 1, &y)));
    assert_refused(
        &client.step(at(2), fx.reply(0, 0, 1, 1, &y)),
        ClientRejection::Duplicate,
    );
    assert_refused(
        &client.step(at(2), fx.reply(0, 0, 1, 1, &z)),
        ClientRejection::Duplicate,
    );
    assert!(client.is_busy());
    // Z from another replica is one vote for Z: still not complete.
    assert_nothing(&client.step(at(3), fx.reply(3, 0, 1, 1, &z)));
    let actions = client.step(at(4), fx.reply(2, 0, 1, 1, &y));
    assert_eq!(actions.completed.map(|c| c.outcome), Some(y));
}

/// Section 4.1 (a reply names the client and the request's timestamp): a reply addressed to
/// another client is `NotForThisClient`, one for another timestamp (or when no request is
/// outstanding) is `Unexpected`, and a message that is not a reply is `NotAReply`. None of them
/// counts: the same replicas' proper replies still count afterwards.
#[test]
fn replies_for_another_client_or_timestamp_are_refused() {
    let fx = Fixture::new(1);
    let mut client = fx.client(1);
    let outcome = ok(b"r");
    assert_refused(
        &client.step(at(0), fx.reply(0, 0, 1, 1, &outcome)),
        ClientRejection::Unexpected,
    );
    let _ = client.submit(at(0), b"op".to_vec()).expect("idle client");
    assert_refused(
        &client.step(at(1), fx.reply(0, 0, 2, 1, &outcome)),
        ClientRejection::NotForThisClient,
    );
    assert_refused(
        &client.step(at(1), fx.reply(1, 0, 1, 2, &outcome)),
        ClientRejection::Unexpected,
    );
    assert_refused(
        &client.step(at(1), fx.reply(1, 0, 1, 0, &outcome)),
        ClientRejection::Unexpected,
    );
    let prepare = Prepare {
        view: View(0),
        seq: SeqNum(1),
        digest: Digest::ZERO,
    }
    .sign(&replica_key(0), CLUSTER, Principal::Replica(ReplicaId(0)));
    let prepare = fx.verifier.verify(prepare).expect("a valid prepare");
    assert_refused(
        &client.step(at(1), ClientInput::Message(prepare)),
        ClientRejection::NotAReply,
    );
    assert!(client.is_busy());
    assert_nothing(&client.step(at(2), fx.reply(0, 0, 1, 1, &outcome)));
    let actions = client.step(at(2), fx.reply(1, 0, 1, 1, &outcome));
    assert_eq!(actions.completed.map(|c| c.timestamp), Some(1));
}

/// Section 4.1 ("the client ... learns the current view from replies"; a reply carries the
/// replica's view): the client adopts the (f+1)-th highest view among the replies, so a single
/// Byzantine replica claiming view 100 cannot move it. With a matching Byzantine reply, completion
/// comes with r0's reply; with a different Byzantine outcome, with r1's; either way the view stays
/// 0 and the next request goes to replica 0.
#[test]
fn a_byzantine_view_in_a_reply_does_not_move_the_client() {
    let fx = Fixture::new(1);
    let y = ok(b"Y");

    let mut client = fx.client(1);
    let _ = client.submit(at(0), b"op".to_vec()).expect("idle client");
    assert_nothing(&client.step(at(1), fx.reply(3, 100, 1, 1, &y)));
    let actions = client.step(at(1), fx.reply(0, 0, 1, 1, &y));
    assert!(actions.completed.is_some());
    assert_eq!(client.view(), View(0));

    let mut client = fx.client(1);
    let _ = client.submit(at(0), b"op".to_vec()).expect("idle client");
    assert_nothing(&client.step(at(1), fx.reply(3, 100, 1, 1, &ok(b"X"))));
    assert_nothing(&client.step(at(1), fx.reply(0, 0, 1, 1, &y)));
    let actions = client.step(at(1), fx.reply(1, 0, 1, 1, &y));
    assert!(actions.completed.is_some());
    assert_eq!(client.view(), View(0));
    let actions = client.submit(at(2), b"next".to_vec()).expect("idle client");
    assert_eq!(actions.send[0].to, Destination::Replica(ReplicaId(0)));
}

/// Section 4.1 (the client learns the current view from replies): f+1 replies in view 2 move
/// the client to view 2 (its next request still goes to every replica, the new primary among
/// them). The view never moves back on replies from older views.
#[test]
fn the_client_learns_the_view_from_f_plus_one_replies() {
    let fx = Fixture::new(1);
    let mut client = fx.client(1);
    let y = ok(b"Y");
    let _ = client.submit(at(0), b"op".to_vec()).expect("idle client");
    assert_nothing(&client.step(at(1), fx.reply(0, 2, 1, 1, &y)));
    assert_eq!(client.view(), View(0), "one reply does not move the view");
    let actions = client.step(at(1), fx.reply(1, 2, 1, 1, &y));
    assert!(actions.completed.is_some());
    assert_eq!(client.view(), View(2));

    let actions = client.submit(at(2), b"next".to_vec()).expect("idle client");
    assert_eq!(actions.send.len(), 4);
    assert!(
        actions
            .send
            .iter()
            .any(|o| o.to == Destination::Replica(ReplicaId(2)))
    );

    // Replies from an older view complete the request but do not move the view back.
    assert_nothing(&client.step(at(3), fx.reply(0, 0, 1, 2, &y)));
    assert!(
        client
            .step(at(3), fx.reply(3, 0, 1, 2, &y))
            .completed
            .is_some()
    );
    assert_eq!(client.view(), View(2));
}

/// Section 4.1 ("if the client does not receive replies soon enough, it broadcasts the request to
/// all replicas"): a tick before `timing.client_retransmit` has passed sends nothing; a tick at
/// the `poll_timeout` deadline sends the same request frame to every replica and sets the next
/// deadline one period later. An idle client has no deadline and ignores ticks.
#[test]
fn the_client_retransmits_to_all_replicas_after_the_timeout() {
    let fx = Fixture::new(1);
    let period = fx.config.timing.client_retransmit;
    let mut client = fx.client(1);
    assert_eq!(client.poll_timeout(), None);
    assert_nothing(&client.step(at(0), ClientInput::Tick));

    let start = at(10);
    let actions = client.submit(start, b"op".to_vec()).expect("idle client");
    let frame = actions.send[0].frame.clone();
    let deadline = start + period;
    assert_eq!(client.poll_timeout(), Some(deadline));

    let just_before = Time::from_nanos(deadline.as_nanos() - 1);
    assert_nothing(&client.step(just_before, ClientInput::Tick));
    assert_eq!(client.poll_timeout(), Some(deadline));

    let actions = client.step(deadline, ClientInput::Tick);
    let everyone: Vec<Outgoing> = (0..4)
        .map(|r| Outgoing {
            to: Destination::Replica(ReplicaId(r)),
            frame: frame.clone(),
        })
        .collect();
    assert_eq!(actions.send, everyone);
    assert_eq!(actions.completed, None);
    assert_eq!(actions.rejected, None);
    assert_eq!(client.poll_timeout(), Some(deadline + period));
    assert_nothing(&client.step(deadline, ClientInput::Tick));

    // The next period retransmits again; completion clears the deadline.
    assert_eq!(
        client.step(deadline + period, ClientInput::Tick).send,
        everyone
    );
    let y = ok(b"Y");
    assert_nothing(&client.step(deadline + period, fx.reply(2, 0, 1, 1, &y)));
    let done = client.step(deadline + period, fx.reply(3, 0, 1, 1, &y));
    assert_eq!(done.completed.map(|c| c.latency), Some(period * 2));
    assert_eq!(client.poll_timeout(), None);
    assert_nothing(&client.step(deadline + period * 3, ClientInput::Tick));
}

/// Section 4.1 ("a client has at most one outstanding request"): `submit` while a request is
/// outstanding is `Busy` and leaves the outstanding request as it was; an operation over
/// `limits.max_operation_bytes` is `OperationTooLarge` and uses no timestamp; one of exactly the
/// limit is sent.
#[test]
fn submit_refuses_a_second_request_and_oversized_operations() {
    let fx = Fixture::new(1);
    let max = fx.config.limits.max_operation_bytes;
    let mut client = fx.client(1);
    assert_eq!(
        client.submit(at(0), vec![0; max + 1]).err(),
        Some(ClientError::OperationTooLarge { len: max + 1, max })
    );
    assert!(!client.is_busy());
    assert_eq!(client.next_timestamp(), Some(1));

    let actions = client.submit(at(1), vec![0; max]).expect("at the limit");
    assert_eq!(fx.request(&actions.send[0].frame).1.timestamp, 1);
    let deadline = client.poll_timeout();
    assert_eq!(
        client.submit(at(2), b"second".to_vec()).err(),
        Some(ClientError::Busy)
    );
    assert_eq!(client.poll_timeout(), deadline);
    assert_eq!(client.next_timestamp(), Some(2));
    // The outstanding request is still timestamp 1.
    let y = ok(b"Y");
    assert_nothing(&client.step(at(3), fx.reply(0, 0, 1, 1, &y)));
    assert_eq!(
        client
            .step(at(3), fx.reply(1, 0, 1, 1, &y))
            .completed
            .map(|c| c.timestamp),
        Some(1)
    );
}

/// Section 4.1 (clients are admitted principals with their own keys, and timestamps start above
/// every earlier one): `Client::new` refuses an id the configuration does not admit (field
/// "clients"), a key pair that is not the id's configured key ("key"), a first timestamp of 0
/// ("first_timestamp"), and an invalid configuration (its own field).
#[test]
fn client_new_refuses_bad_arguments() {
    let fx = Fixture::new(1);
    let field = |result: Result<Client, bft_core::ConfigError>| result.expect_err("refused").field;
    assert_eq!(
        field(Client::new(
            fx.config.clone(),
            ClientId(99),
            client_key(99),
            1
        )),
        "clients"
    );
    assert_eq!(
        field(Client::new(
            fx.config.clone(),
            ClientId(1),
            client_key(2),
            1
        )),
        "key"
    );
    assert_eq!(
        field(Client::new(
            fx.config.clone(),
            ClientId(1),
            replica_key(0),
            1
        )),
        "key"
    );
    assert_eq!(
        field(Client::new(
            fx.config.clone(),
            ClientId(1),
            client_key(1),
            0
        )),
        "first_timestamp"
    );
    let mut invalid = harness::config(1, 2);
    invalid.f = 0;
    assert_eq!(
        field(Client::new(
            Arc::new(invalid),
            ClientId(1),
            client_key(1),
            1
        )),
        "f"
    );
    let client = Client::new(fx.config.clone(), ClientId(2), client_key(2), 42).expect("valid");
    assert_eq!(client.id(), ClientId(2));
    assert_eq!(client.next_timestamp(), Some(42));
    assert_eq!(client.view(), View(0));
}

/// Section 4.1 (timestamps increase): `Client::new` accepts any first timestamp of at least 1,
/// including `u64::MAX`, so a client created with it must be able to submit that request (and
/// then refuse further ones with an error) rather than panic or wrap around to timestamp 0, which
/// replicas would take as stale.
#[test]
fn a_client_at_the_last_timestamp_does_not_overflow() {
    let fx = Fixture::new(1);
    let mut client =
        Client::new(fx.config.clone(), ClientId(1), client_key(1), u64::MAX).expect("accepted");
    let actions = client
        .submit(at(0), b"last".to_vec())
        .expect("the last timestamp is usable");
    assert_eq!(fx.request(&actions.send[0].frame).1.timestamp, u64::MAX);
    let y = ok(b"Y");
    assert_nothing(&client.step(at(1), fx.reply(0, 0, 1, u64::MAX, &y)));
    assert!(
        client
            .step(at(1), fx.reply(1, 0, 1, u64::MAX, &y))
            .completed
            .is_some()
    );
    assert!(
        client.submit(at(2), b"after".to_vec()).is_err(),
        "no timestamp is left: the client must refuse rather than reuse or wrap"
    );
}

#[test]
fn an_abandoned_request_frees_the_client_and_its_late_replies_are_ignored() {
    let config = std::sync::Arc::new(harness::config(1, 1));
    let mut client = Client::new(config, ClientId(1), harness::client_key(1), 1).unwrap();
    let _ = client.submit(at(0), b"first".to_vec()).unwrap();
    assert!(client.is_busy());
    assert!(matches!(
        client.submit(at(1), b"second".to_vec()),
        Err(bft_core::ClientError::Busy)
    ));
    client.abandon();
    assert!(!client.is_busy());
    assert_eq!(client.poll_timeout(), None);
    // Replies to the abandoned request (timestamp 1) complete nothing.
    for replica in 0..4 {
        let reply = Reply {
            view: bft_core::View(0),
            client: ClientId(1),
            timestamp: 1,
            outcome: ok(b"late"),
        };
        let sender = Principal::Replica(ReplicaId(replica));
        let frame = reply.unsigned(harness::CLUSTER_ID, sender);
        let message = bft_core::Verifier::new(std::sync::Arc::new(harness::config(1, 1)))
            .unwrap()
            .verify_from(sender, frame)
            .unwrap();
        let actions = client.step(at(2), ClientInput::Message(message));
        assert!(actions.completed.is_none());
    }
    // The next request carries a higher timestamp.
    let _ = client.submit(at(3), b"second".to_vec()).unwrap();
    assert_eq!(client.next_timestamp(), Some(3));
}
