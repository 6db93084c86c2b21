//! The Redis keys and the pub/sub channel of a topic.
//!
//! Every name carries the topic as a Redis Cluster hash tag (`{<topic>}`), so all keys
//! of one topic live in one slot and one script may touch them together. A topic can
//! never contain `{` or `}` (its characters are `[A-Za-z0-9_\-:.@/=]`), so the tag is
//! exactly the topic and no topic can split or widen another's tag.

use crate::domain::Topic;

/// The prefix of every key and channel Signalbox uses.
pub const PREFIX: &str = "sb";

/// The names of one topic's keys and channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicKeys {
    /// `sb:{<topic>}:meta`: a hash with `offset` (the last assigned) and `epoch`.
    pub meta: String,
    /// `sb:{<topic>}:stream`: the history, a Redis Stream whose entry ids are
    /// `<offset>-0` with one field `f` (the delivered frame).
    pub stream: String,
    /// `sb:{<topic>}:retained`: the retained state's delivered frame.
    pub retained: String,
    /// `sb:{<topic>}`: the channel every publish goes out on.
    pub channel: String,
    /// `sb:{<topic>}:presence`: connection id → its presence entry (see `presence`).
    pub presence: String,
    /// `sb:{<topic>}:presence:exp`: connection id → when its entry expires (unix ms).
    pub presence_expiry: String,
}

impl TopicKeys {
    /// The keys and channel of `topic`.
    pub fn new(topic: &Topic) -> Self {
        let tagged = format!("{PREFIX}:{{{}}}", topic.as_str());
        Self {
            meta: format!("{tagged}:meta"),
            stream: format!("{tagged}:stream"),
            retained: format!("{tagged}:retained"),
            presence: format!("{tagged}:presence"),
            presence_expiry: format!("{tagged}:presence:exp"),
            channel: tagged,
        }
    }
}

/// The topic whose channel is `channel` (`sb:{<topic>}`), as text; `None` for any other
/// channel.
pub fn topic_of_channel(channel: &str) -> Option<&str> {
    channel.strip_prefix("sb:{")?.strip_suffix('}')
}

/// `sbn:{<node id>}`: the channel of one node (its liveness probe and the commands other
/// nodes send it). Its own prefix, so no topic's channel can ever equal it.
pub fn node_channel(node_id: &str) -> String {
    format!("{PREFIX}n:{{{node_id}}}")
}

/// The Redis Cluster hash tag of a key: the text between its first `{` and the next
/// `}`, when not empty (the rule Redis applies to pick a key's slot).
pub fn hash_tag(key: &str) -> Option<&str> {
    let start = key.find('{')? + 1;
    let len = key[start..].find('}')?;
    (len > 0).then(|| &key[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_tagged_with_exactly_the_topic() {
        for raw in ["global", "job:1", "a-b_c.d@e/f=g:h", "x:y:z"] {
            let topic = Topic::parse(raw).unwrap();
            let keys = TopicKeys::new(&topic);
            for name in [&keys.meta, &keys.stream, &keys.retained, &keys.channel, &keys.presence, &keys.presence_expiry]
            {
                assert_eq!(hash_tag(name), Some(raw), "{name}");
                assert!(name.starts_with("sb:{"), "{name}");
            }
            assert_eq!(keys.meta, format!("sb:{{{raw}}}:meta"));
            assert_eq!(keys.channel, format!("sb:{{{raw}}}"));
        }
    }

    #[test]
    fn channels_map_back_to_topics_and_node_channels_never_collide() {
        let topic = Topic::parse("node:abc").unwrap();
        let keys = TopicKeys::new(&topic);
        assert_eq!(topic_of_channel(&keys.channel), Some("node:abc"));
        assert_ne!(node_channel("abc"), keys.channel);
        assert_eq!(topic_of_channel(&node_channel("abc")), None);
        assert_eq!(hash_tag(&node_channel("n1")), Some("n1"));
    }

    #[test]
    fn topics_cannot_carry_braces() {
        assert!(Topic::parse("a{b").is_err());
        assert!(Topic::parse("a}b").is_err());
        assert!(Topic::parse("ns:{x}").is_err());
    }

    #[test]
    fn hash_tag_follows_the_redis_rule() {
        assert_eq!(hash_tag("a{b}c"), Some("b"));
        assert_eq!(hash_tag("a{}c"), None);
        assert_eq!(hash_tag("abc"), None);
        assert_eq!(hash_tag("{a}{b}"), Some("a"));
    }
}
