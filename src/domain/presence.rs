//! Presence: who is subscribed to a topic (SPEC §9.1).

/// Who is subscribed to a topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presence {
    /// The distinct user ids of the subscribed connections, sorted.
    pub users: Vec<String>,
    /// Subscribed connections.
    pub connections: usize,
}

/// One subscribed connection, as a broker that keeps presence for a cluster records it.
#[derive(Debug, Clone, Copy)]
pub struct PresenceMember<'a> {
    /// The connection's id.
    pub connection_id: &'a str,
    /// Its user.
    pub user: &'a str,
    /// Its topic's namespace announces joins and leaves (`join_leave`).
    pub announce: bool,
}
