//! Topic access rules (SPEC §4).

use std::collections::BTreeMap;

use super::Identity;
use crate::config::{NamespaceConfig, SubscribePolicy};
use crate::domain::Topic;

/// Decides who may subscribe and publish to which topics.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    dev: bool,
    namespaces: BTreeMap<String, NamespaceConfig>,
}

impl AccessPolicy {
    /// Builds the policy from the configured namespaces; in dev mode every topic is open
    /// to subscribe.
    pub fn new(dev: bool, namespaces: BTreeMap<String, NamespaceConfig>) -> Self {
        Self { dev, namespaces }
    }

    fn namespace(&self, topic: &Topic) -> Option<&NamespaceConfig> {
        self.namespaces.get(topic.namespace())
    }

    /// Whether `who` may subscribe to `topic`.
    pub fn may_subscribe(&self, who: &Identity, topic: &Topic) -> bool {
        if self.dev || who.admin {
            return true;
        }
        let owns = topic.id() == Some(who.user.as_str());
        if topic.namespace() == "user" {
            return owns;
        }
        if topic.as_str() == "global" {
            return true;
        }
        if who.topics.iter().any(|p| p.matches(topic)) {
            return true;
        }
        match self.namespace(topic).map(|n| n.subscribe).unwrap_or_default() {
            SubscribePolicy::Token => false,
            SubscribePolicy::Authenticated => true,
            SubscribePolicy::Owner => owns,
        }
    }

    /// Whether `who` may publish into `topic` from a client connection: the namespace must
    /// allow client publishing and `who` must be allowed to subscribe to the topic.
    pub fn may_client_publish(&self, who: &Identity, topic: &Topic) -> bool {
        let open = self.namespace(topic).is_some_and(|n| n.client_publish);
        open && self.may_subscribe(who, topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{TopicPattern, UserId};

    fn who(user: &str, patterns: &[&str]) -> Identity {
        Identity {
            user: UserId::new(user),
            admin: false,
            topics: patterns.iter().map(|p| TopicPattern::new(p)).collect(),
            expires_at: Some(0),
        }
    }

    fn t(s: &str) -> Topic {
        Topic::parse(s).unwrap()
    }

    fn policy() -> AccessPolicy {
        let mut ns = BTreeMap::new();
        ns.insert("lobby".into(), NamespaceConfig { subscribe: SubscribePolicy::Authenticated, ..Default::default() });
        ns.insert("inbox".into(), NamespaceConfig { subscribe: SubscribePolicy::Owner, ..Default::default() });
        ns.insert("chat".into(), NamespaceConfig { client_publish: true, ..Default::default() });
        AccessPolicy::new(false, ns)
    }

    #[test]
    fn subscribe_rules() {
        let p = policy();
        let u1 = who("u1", &["job:*", "chat:1"]);
        assert!(p.may_subscribe(&u1, &t("user:u1")));
        assert!(!p.may_subscribe(&u1, &t("user:u2")));
        assert!(p.may_subscribe(&u1, &t("global")));
        assert!(p.may_subscribe(&u1, &t("job:abc")));
        assert!(!p.may_subscribe(&u1, &t("project:42")));
        assert!(p.may_subscribe(&u1, &t("lobby:x")));
        assert!(p.may_subscribe(&u1, &t("inbox:u1")));
        assert!(!p.may_subscribe(&u1, &t("inbox:u2")));
        let admin = Identity { admin: true, ..who("root", &[]) };
        assert!(p.may_subscribe(&admin, &t("user:u2")));
        assert!(AccessPolicy::new(true, BTreeMap::new()).may_subscribe(&who("x", &[]), &t("project:1")));
    }

    #[test]
    fn publish_needs_open_namespace_and_access() {
        let p = policy();
        let u1 = who("u1", &["job:*", "chat:1"]);
        assert!(p.may_client_publish(&u1, &t("chat:1")));
        assert!(!p.may_client_publish(&u1, &t("chat:2")));
        assert!(!p.may_client_publish(&u1, &t("job:1")));
    }
}
