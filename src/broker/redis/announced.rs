//! What this node's subscribers of one topic have been told about the members on other
//! nodes: the `join`/`leave` frames relayed so far, kept as a set of connections, so that
//! a reconcile after a lost pub/sub connection can announce exactly what was missed, and
//! a frame that repeats what a reconcile announced is dropped.
//!
//! Pub/sub is at most once: a `join` or `leave` published while this node was not
//! subscribed (Redis restarted, and another node wrote the change before this node
//! subscribed again) never arrives. After subscribing again the node reads the topic's
//! presence and [`Announced::finish_reconcile`] turns the difference into frames. Each
//! change is then announced once whichever way it came first: every relayed frame goes
//! through [`Announced::relay`], which only lets through a change of the set.
//!
//! Until its first reconcile the set only knows the members whose `join` it relayed (not
//! those already there when this node started watching), so a `leave` of a member it does
//! not know is let through as before. It only decides: it never reads Redis or sends a
//! frame ([`super::reconcile`] does, under the lock that holds this).

use std::collections::{BTreeMap, HashMap};

use crate::codec::PresenceChange;

/// The other nodes' members of a topic announced to this node's subscribers.
#[derive(Debug, Default)]
pub(super) struct Announced {
    /// Connections announced present (their `join` relayed, no `leave` since) → user.
    members: HashMap<String, String>,
    /// A reconcile has run: `members` then holds every announcing member of the other
    /// nodes, so a `leave` of a connection not in it was announced already.
    complete: bool,
    /// While a reconcile's read is in flight: the changes relayed meanwhile (connection →
    /// its user if it joined, `None` if it left), the last one per connection. The read
    /// may have been answered before or after each of them; the changes win, as they are
    /// at least as new as the read (see [`Announced::finish_reconcile`]).
    pending: Option<HashMap<String, Option<String>>>,
}

/// A presence change to announce to this node's subscribers of the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Change {
    /// `join` or `leave`.
    pub kind: PresenceChange,
    /// The connection that joined or left.
    pub connection: String,
    /// Its user.
    pub user: String,
}

impl Announced {
    /// A `join` or `leave` frame of another node's connection arrived (pub/sub, or a
    /// sweep or refresh script of this node): whether to send it to the subscribers.
    /// False when it changes nothing they were told (a reconcile announced it already).
    pub fn relay(&mut self, kind: PresenceChange, connection: &str, user: &str) -> bool {
        if let Some(pending) = &mut self.pending {
            let joined = matches!(kind, PresenceChange::Join).then(|| user.to_owned());
            pending.insert(connection.to_owned(), joined);
        }
        match kind {
            PresenceChange::Join => {
                if self.members.contains_key(connection) {
                    return false;
                }
                self.members.insert(connection.to_owned(), user.to_owned());
                true
            }
            // Not known: before the first reconcile, a member that was there before this
            // node watched the topic (announced as it always was); after it, one whose
            // `leave` the reconcile announced.
            PresenceChange::Leave => self.members.remove(connection).is_some() || !self.complete,
        }
    }

    /// A reconcile starts: its read of the topic's presence is about to be sent. Changes
    /// relayed from now on are remembered for [`Announced::finish_reconcile`].
    pub fn begin_reconcile(&mut self) {
        self.pending = Some(HashMap::new());
    }

    /// The reconcile's read failed: nothing is reconciled (the next one will be).
    pub fn abandon_reconcile(&mut self) {
        self.pending = None;
    }

    /// The reconcile's read answered `present` (the other nodes' announcing members,
    /// connection → user, read after this node subscribed to the topic's channel): the
    /// changes to announce, leaves first, each once, so that the subscribers' view is
    /// the topic's presence from here on.
    ///
    /// Every change relayed since [`Announced::begin_reconcile`] is applied over the read:
    /// one published before the read is already in it (same answer), one published after
    /// it is newer. A change published before the read that arrives later, by pub/sub,
    /// finds the set already changed and is dropped by [`Announced::relay`].
    pub fn finish_reconcile(&mut self, mut present: HashMap<String, String>) -> Vec<Change> {
        for (connection, joined) in self.pending.take().unwrap_or_default() {
            match joined {
                Some(user) => present.insert(connection, user),
                None => present.remove(&connection),
            };
        }
        // Sorted: the same difference always gives the same frames, in the same order.
        let mut leaves = BTreeMap::new();
        for (connection, user) in &self.members {
            if !present.contains_key(connection) {
                leaves.insert(connection.clone(), user.clone());
            }
        }
        let joins: BTreeMap<String, String> = present
            .iter()
            .filter(|(c, _)| !self.members.contains_key(*c))
            .map(|(c, u)| (c.clone(), u.clone()))
            .collect();
        self.members = present;
        self.complete = true;
        let leaves =
            leaves.into_iter().map(|(connection, user)| Change { kind: PresenceChange::Leave, connection, user });
        let joins = joins.into_iter().map(|(connection, user)| Change { kind: PresenceChange::Join, connection, user });
        leaves.chain(joins).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PresenceChange::{Join, Leave};

    fn present(members: &[(&str, &str)]) -> HashMap<String, String> {
        members.iter().map(|(c, u)| ((*c).to_owned(), (*u).to_owned())).collect()
    }

    fn change(kind: PresenceChange, connection: &str, user: &str) -> Change {
        Change { kind, connection: connection.into(), user: user.into() }
    }

    #[test]
    fn before_a_reconcile_every_change_is_relayed_once() {
        let mut a = Announced::default();
        assert!(a.relay(Join, "c1", "bob"));
        assert!(!a.relay(Join, "c1", "bob"), "a repeated join");
        assert!(a.relay(Leave, "c1", "bob"));
        // A member that was there before the topic was watched still leaves.
        assert!(a.relay(Leave, "c0", "old"));
    }

    #[test]
    fn a_leave_missed_during_an_outage_is_announced_once() {
        let mut a = Announced::default();
        assert!(a.relay(Join, "c1", "bob"));
        a.begin_reconcile();
        assert_eq!(a.finish_reconcile(present(&[])), [change(Leave, "c1", "bob")]);
        // The leave, published before the read, arrives after it (or a sweep relays it).
        assert!(!a.relay(Leave, "c1", "bob"));
        assert_eq!(a.finish_reconcile(present(&[])), [], "a second reconcile announces nothing");
    }

    #[test]
    fn a_join_missed_during_an_outage_is_announced_once() {
        let mut a = Announced::default();
        a.begin_reconcile();
        assert_eq!(a.finish_reconcile(present(&[("c2", "carol")])), [change(Join, "c2", "carol")]);
        assert!(!a.relay(Join, "c2", "carol"), "the join published before the read");
        assert!(a.relay(Leave, "c2", "carol"));
        assert!(!a.relay(Leave, "c2", "carol"), "and its sweep");
    }

    #[test]
    fn changes_relayed_during_the_read_win_over_it() {
        let mut a = Announced::default();
        assert!(a.relay(Join, "c1", "bob"));
        a.begin_reconcile();
        // A sweep of bob relayed while the read (which still saw bob) was in flight,
        // and carol joining after the read.
        assert!(a.relay(Leave, "c1", "bob"));
        assert!(a.relay(Join, "c2", "carol"));
        assert_eq!(a.finish_reconcile(present(&[("c1", "bob")])), []);
        assert!(!a.relay(Join, "c2", "carol"));
        assert!(!a.relay(Leave, "c1", "bob"));
    }

    #[test]
    fn an_abandoned_reconcile_changes_nothing() {
        let mut a = Announced::default();
        assert!(a.relay(Join, "c1", "bob"));
        a.begin_reconcile();
        a.abandon_reconcile();
        assert!(a.relay(Leave, "c1", "bob"));
        assert!(a.relay(Leave, "c0", "old"), "still before the first reconcile");
    }

    #[test]
    fn leaves_come_before_joins_in_a_reconcile() {
        let mut a = Announced::default();
        assert!(a.relay(Join, "b", "bob"));
        a.begin_reconcile();
        let changes = a.finish_reconcile(present(&[("a", "ann"), ("c", "cid")]));
        assert_eq!(changes, [change(Leave, "b", "bob"), change(Join, "a", "ann"), change(Join, "c", "cid")]);
    }
}
