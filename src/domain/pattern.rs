//! Glob patterns from a token's `topics` claim (e.g. `job:*`).

use wildmatch::WildMatch;

use super::Topic;

/// A topic glob: `*` matches any run of characters, `?` one character.
#[derive(Debug, Clone)]
pub struct TopicPattern(WildMatch);

impl TopicPattern {
    /// Compiles a pattern; any string is a valid pattern.
    pub fn new(raw: &str) -> Self {
        Self(WildMatch::new(raw))
    }

    /// Whether `topic` matches the whole pattern.
    pub fn matches(&self, topic: &Topic) -> bool {
        self.0.matches(topic.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_topic() {
        let t = |s| Topic::parse(s).unwrap();
        assert!(TopicPattern::new("job:*").matches(&t("job:abc")));
        assert!(!TopicPattern::new("job:*").matches(&t("jobs:abc")));
        assert!(TopicPattern::new("project:42").matches(&t("project:42")));
        assert!(!TopicPattern::new("project:42").matches(&t("project:420")));
        assert!(TopicPattern::new("*").matches(&t("anything:1")));
    }
}
