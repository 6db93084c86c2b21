//! Topic names (`namespace:id` or a bare singleton such as `global`).

use std::fmt;
use std::sync::Arc;

/// Longest topic name accepted, in bytes (SPEC §1).
pub const MAX_TOPIC_LEN: usize = 256;

/// Why a string is not a valid topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The empty string.
    #[error("topic must not be empty")]
    Empty,
    /// More than [`MAX_TOPIC_LEN`] bytes.
    #[error("topic is longer than {MAX_TOPIC_LEN} bytes")]
    TooLong,
    /// A character outside `[A-Za-z0-9_\-:.@/=]`.
    #[error("topic contains the character {0:?}; allowed are A-Z a-z 0-9 _ - : . @ / =")]
    BadCharacter(char),
    /// `namespace:` with nothing after the colon, or `:id` with no namespace.
    #[error("topic must look like `namespace:id` or a bare name such as `global`")]
    BadShape,
}

/// A validated topic name. Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

impl Topic {
    /// Validates `raw` as a topic name.
    pub fn parse(raw: &str) -> Result<Self, TopicError> {
        if raw.is_empty() {
            return Err(TopicError::Empty);
        }
        if raw.len() > MAX_TOPIC_LEN {
            return Err(TopicError::TooLong);
        }
        if let Some(bad) = raw.chars().find(|c| !is_topic_char(*c)) {
            return Err(TopicError::BadCharacter(bad));
        }
        if let Some((namespace, id)) = raw.split_once(':')
            && (namespace.is_empty() || id.is_empty())
        {
            return Err(TopicError::BadShape);
        }
        Ok(Self(Arc::from(raw)))
    }

    /// Builds `namespace:id`, validating the result.
    pub fn with_namespace(namespace: &str, id: &str) -> Result<Self, TopicError> {
        Self::parse(&format!("{namespace}:{id}"))
    }

    /// The part before the first `:` (the whole name for singletons like `global`).
    pub fn namespace(&self) -> &str {
        self.0.split_once(':').map_or(&self.0, |(ns, _)| ns)
    }

    /// The part after the first `:`, if any.
    pub fn id(&self) -> Option<&str> {
        self.0.split_once(':').map(|(_, id)| id)
    }

    /// The topic name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.' | '@' | '/' | '=')
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Topic({})", &self.0)
    }
}

impl serde::Serialize for Topic {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_spec_examples() {
        for ok in ["project:42", "job:job_20240115_abc123", "user:u1", "global", "a:b:c", "x:a@b.c/d=e-f"] {
            assert!(Topic::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_topics() {
        assert_eq!(Topic::parse(""), Err(TopicError::Empty));
        assert_eq!(Topic::parse(&"a".repeat(257)), Err(TopicError::TooLong));
        assert!(Topic::parse(&"a".repeat(256)).is_ok());
        assert_eq!(Topic::parse("a b"), Err(TopicError::BadCharacter(' ')));
        assert_eq!(Topic::parse("job:*"), Err(TopicError::BadCharacter('*')));
        assert_eq!(Topic::parse("job:"), Err(TopicError::BadShape));
        assert_eq!(Topic::parse(":1"), Err(TopicError::BadShape));
        assert!(matches!(Topic::parse("é"), Err(TopicError::BadCharacter('é'))));
    }

    #[test]
    fn splits_namespace() {
        let t = Topic::parse("project:42").unwrap();
        assert_eq!((t.namespace(), t.id()), ("project", Some("42")));
        let g = Topic::parse("global").unwrap();
        assert_eq!((g.namespace(), g.id()), ("global", None));
    }
}
