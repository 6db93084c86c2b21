//! Routes: which sink a client message goes to, by its `action` and field values.
//!
//! Owns the matching only: first route whose action is the message's and whose `when`
//! conditions all hold wins. It never sends anything.

use serde_json::{Map, Value};

use super::config::RouteConfig;
use crate::domain::{Filter, FilterError};

/// One compiled route.
struct Route {
    action: String,
    /// `None` when the route has no `when`.
    when: Option<Filter>,
    sink: String,
}

/// The configured routes, compiled.
#[derive(Default)]
pub struct Router {
    routes: Vec<Route>,
}

/// Why a message has no route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRoute {
    /// No route has this action.
    UnknownAction,
    /// Routes have this action, but none of their `when` conditions hold.
    NoMatch,
}

impl Router {
    /// Compiles `routes` (validated by the configuration). `when` tables use the
    /// subscription filter's language: plain values compare for equality.
    pub fn new(routes: &[RouteConfig]) -> Result<Self, FilterError> {
        let routes = routes
            .iter()
            .map(|route| {
                let when = if route.when.is_empty() {
                    None
                } else {
                    // TOML strings, numbers and booleans (all the configuration allows in
                    // `when`) serialize to the same JSON values.
                    Some(Filter::parse(&serde_json::to_value(&route.when).unwrap_or_default())?)
                };
                Ok(Route { action: route.action.clone(), when, sink: route.sink.clone() })
            })
            .collect::<Result<_, FilterError>>()?;
        Ok(Self { routes })
    }

    /// The sink for a message with `action` and fields `message`. A field named in
    /// `when` may stand at the top level of the message or inside its `data` object
    /// (SPEC §3: parameters may be in either place); the top level wins.
    pub fn route(&self, action: &str, message: &Map<String, Value>) -> Result<&str, NoRoute> {
        let mut candidates = self.routes.iter().filter(|r| r.action == action).peekable();
        if candidates.peek().is_none() {
            return Err(NoRoute::UnknownAction);
        }
        let merged = merged_with_data(message);
        let fields = merged.as_ref().unwrap_or(message);
        candidates
            .find(|route| route.when.as_ref().is_none_or(|when| when.matches(fields)))
            .map(|route| route.sink.as_str())
            .ok_or(NoRoute::NoMatch)
    }

    /// Whether no route is configured.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// The message's fields with those of its `data` object added where the top level does
/// not have them; `None` when there is no `data` object (the message is used as is).
fn merged_with_data(message: &Map<String, Value>) -> Option<Map<String, Value>> {
    let data = message.get("data")?.as_object()?;
    let mut merged = message.clone();
    for (key, value) in data {
        merged.entry(key.clone()).or_insert_with(|| value.clone());
    }
    Some(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(toml_text: &str) -> Router {
        #[derive(serde::Deserialize)]
        struct Routes {
            routes: Vec<RouteConfig>,
        }
        let parsed: Routes = toml::from_str(toml_text).unwrap();
        Router::new(&parsed.routes).unwrap()
    }

    fn message(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    const AGENTS: &str = r#"
        [[routes]]
        action = "forward"
        when = { type = "pm" }
        sink = "pm"
        [[routes]]
        action = "forward"
        when = { type = "dev" }
        sink = "dev"
        [[routes]]
        action = "forward"
        when = { type = "dev", priority = 1 }
        sink = "never-reached"
        [[routes]]
        action = "cancel_job"
        sink = "pipeline"
    "#;

    #[test]
    fn routes_by_action_and_field_equality() {
        let r = router(AGENTS);
        assert_eq!(r.route("forward", &message(r#"{"action":"forward","type":"pm"}"#)), Ok("pm"));
        assert_eq!(r.route("forward", &message(r#"{"action":"forward","type":"dev","priority":1}"#)), Ok("dev"));
        assert_eq!(r.route("cancel_job", &message(r#"{"action":"cancel_job","job_id":"j1"}"#)), Ok("pipeline"));
    }

    #[test]
    fn fields_inside_data_count_and_the_top_level_wins() {
        let r = router(AGENTS);
        assert_eq!(r.route("forward", &message(r#"{"action":"forward","data":{"type":"dev"}}"#)), Ok("dev"));
        assert_eq!(r.route("forward", &message(r#"{"action":"forward","type":"pm","data":{"type":"dev"}}"#)), Ok("pm"));
    }

    #[test]
    fn says_whether_the_action_is_unknown_or_no_condition_held() {
        let r = router(AGENTS);
        assert_eq!(r.route("nope", &message(r#"{"action":"nope"}"#)), Err(NoRoute::UnknownAction));
        assert_eq!(r.route("forward", &message(r#"{"action":"forward","type":"qa"}"#)), Err(NoRoute::NoMatch));
        assert_eq!(r.route("forward", &message(r#"{"action":"forward","type":7}"#)), Err(NoRoute::NoMatch));
        assert_eq!(r.route("forward", &message(r#"{"action":"forward"}"#)), Err(NoRoute::NoMatch));
    }

    #[test]
    fn numbers_and_booleans_compare_exactly() {
        let r = router(
            r#"
            [[routes]]
            action = "a"
            when = { n = 3, urgent = true }
            sink = "s"
        "#,
        );
        assert_eq!(r.route("a", &message(r#"{"n":3,"urgent":true}"#)), Ok("s"));
        assert_eq!(r.route("a", &message(r#"{"n":3.0,"urgent":true}"#)), Ok("s"));
        assert_eq!(r.route("a", &message(r#"{"n":"3","urgent":true}"#)), Err(NoRoute::NoMatch));
        assert_eq!(r.route("a", &message(r#"{"n":3,"urgent":"true"}"#)), Err(NoRoute::NoMatch));
    }
}
