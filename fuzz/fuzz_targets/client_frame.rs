//! Feeds arbitrary bytes to the client-frame parser: it must never panic, and anything it
//! accepts must carry valid domain values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signalbox::ws::protocol::{ClientAction, parse_client_frame};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(request) = parse_client_frame(text) {
        match request.action {
            ClientAction::Subscribe { topic, .. }
            | ClientAction::Unsubscribe { topic }
            | ClientAction::RequestStatus { topic } => {
                assert!(signalbox::domain::Topic::parse(topic.as_str()).is_ok());
            }
            ClientAction::Publish { event, .. } => assert!(!event.event_type().is_empty()),
            _ => {}
        }
    }
});
