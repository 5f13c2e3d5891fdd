//! The half store's bookkeeping, on a clock the tests move by hand.

use super::*;

const AFTER: u64 = 1_000;
const INTERVAL: u64 = 300;

fn store() -> HalfStore {
    HalfStore::new(Timing {
        after_us: AFTER,
        interval_us: INTERVAL,
    })
}

/// Prepares a message of `group` at `now` (log position `position`) and
/// makes it written.
fn prepared(s: &mut HalfStore, group: &str, position: u64, now: u64) -> u64 {
    let seq = s.prepare(position, Arc::from(group), MessageId::new(), now);
    s.schedule(seq);
    seq
}

fn ready(claim: Claim) -> Offer {
    match claim {
        Claim::Ready(offer) => offer,
        other => panic!("expected a check, got {other:?}"),
    }
}

#[test]
fn offered_after_the_timeout_to_one_stream_at_a_time() {
    let mut s = store();
    let a = prepared(&mut s, "g", 0, 0);
    let b = prepared(&mut s, "g", 100, 0);
    let other = prepared(&mut s, "other", 200, 0);
    let (one, two) = (s.new_stream(), s.new_stream());
    assert!(matches!(s.claim("g", one, AFTER - 1), Claim::Wait(AFTER)));
    let first = ready(s.claim("g", one, AFTER));
    let second = ready(s.claim("g", two, AFTER));
    assert_eq!(
        (
            first.seq,
            first.prior_checks,
            second.seq,
            second.prior_checks
        ),
        (a, 0, b, 0)
    );
    // Both leased: nothing more for the group until the interval passes,
    // and another group's message is never offered here.
    assert!(matches!(s.claim("g", two, AFTER), Claim::Wait(at) if at == AFTER + INTERVAL));
    let again = ready(s.claim("g", two, AFTER + INTERVAL));
    assert_eq!((again.seq, again.prior_checks), (a, 1));
    assert_eq!(ready(s.claim("other", two, AFTER)).seq, other);
}

#[test]
fn a_closed_streams_checks_are_offered_again_at_once() {
    let mut s = store();
    let a = prepared(&mut s, "g", 0, 0);
    let (one, two) = (s.new_stream(), s.new_stream());
    assert_eq!(ready(s.claim("g", one, AFTER)).seq, a);
    assert!(matches!(s.claim("g", two, AFTER + 1), Claim::Wait(_)));
    s.release(one, AFTER + 1);
    let offer = ready(s.claim("g", two, AFTER + 1));
    assert_eq!((offer.seq, offer.prior_checks), (a, 1));
}

#[test]
fn unknown_restarts_the_interval() {
    let mut s = store();
    let a = prepared(&mut s, "g", 0, 0);
    let one = s.new_stream();
    ready(s.claim("g", one, AFTER));
    s.unknown(a, AFTER + 50);
    assert!(
        matches!(s.claim("g", one, AFTER + 50), Claim::Wait(at) if at == AFTER + 50 + INTERVAL)
    );
    assert_eq!(ready(s.claim("g", one, AFTER + 50 + INTERVAL)).seq, a);
}

#[test]
fn unwritten_messages_are_not_offered() {
    let mut s = store();
    let seq = s.prepare(0, Arc::from("g"), MessageId::new(), 0);
    let one = s.new_stream();
    assert!(matches!(s.claim("g", one, AFTER * 10), Claim::Idle));
    s.schedule(seq);
    assert_eq!(ready(s.claim("g", one, AFTER * 10)).seq, seq);
}

#[test]
fn resolutions_are_final_and_undone_only_by_a_failed_write() {
    let mut s = store();
    let a = prepared(&mut s, "g", 0, 0);
    assert!(matches!(s.lookup(a), Lookup::Unresolved(_)));
    assert!(matches!(s.lookup(a + 1), Lookup::Unknown));
    s.resolve(a, 500);
    assert!(matches!(s.lookup(a), Lookup::Resolving { position: 500 }));
    assert_eq!(
        s.pinned(),
        Some(0),
        "its record is needed until the resolution is written"
    );
    // The write failed: it is unresolved again, and offered.
    s.rollback(500);
    assert!(matches!(s.lookup(a), Lookup::Unresolved(_)));
    let one = s.new_stream();
    assert_eq!(ready(s.claim("g", one, AFTER)).seq, a);
    s.resolve(a, 600);
    s.written_to(700);
    assert!(matches!(s.lookup(a), Lookup::Resolved));
    assert!(matches!(s.claim("g", one, AFTER * 10), Claim::Idle));
    assert_eq!((s.len(), s.pinned()), (0, None));
}

#[test]
fn a_failed_prepare_gives_its_number_back() {
    let mut s = store();
    let a = prepared(&mut s, "g", 0, 0);
    let b = s.prepare(100, Arc::from("g"), MessageId::new(), 0);
    s.rollback(100);
    assert!(matches!(s.lookup(b), Lookup::Unknown));
    assert_eq!(s.prepare(100, Arc::from("g"), MessageId::new(), 0), b);
    assert!(matches!(s.lookup(a), Lookup::Unresolved(_)));
}

#[test]
fn the_checkpoint_restores_the_unresolved_set() {
    let mut s = store();
    let a = prepared(&mut s, "g", 10, 5);
    let b = prepared(&mut s, "h", 20, 7);
    let c = prepared(&mut s, "g", 30, 9);
    s.resolve(b, 40);
    let saved = s.checkpoint();
    assert_eq!(saved.next_seq, 3);
    let mut back = HalfStore::restore(&saved, s.timing).unwrap();
    assert_eq!((back.len(), back.pinned()), (2, Some(10)));
    assert!(matches!(back.lookup(b), Lookup::Resolved));
    // Replaying records the checkpoint covers changes nothing; later
    // ones are applied.
    back.replay_half(a, "g", MessageId::new(), 10, 5);
    back.replay_done(c);
    back.replay_half(3, "h", MessageId::new(), 50, 11);
    assert_eq!(back.len(), 2);
    let one = back.new_stream();
    let offer = ready(back.claim("g", one, 5 + AFTER));
    assert_eq!((offer.seq, offer.position), (a, 10));
    assert_eq!(ready(back.claim("h", one, 11 + AFTER)).seq, 3);
    let mut bad = saved.clone();
    bad.unresolved[0].id = "not an id".into();
    let err = HalfStore::restore(&bad, s.timing).unwrap_err();
    assert!(err.contains("not an id"), "{err}");
}
