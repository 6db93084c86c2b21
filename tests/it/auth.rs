//! Upgrade authentication, origins, and topic access control.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn valid_token_gets_connected_frame_with_spec_fields() {
    let gw = TestGateway::spawn().await;
    let c = gw.connect("u1", json!({})).await;
    let id = c.connected["connectionId"].as_str().unwrap();
    let parts: Vec<_> = id.split('_').collect();
    assert_eq!((parts.len(), parts[0]), (3, "conn"), "{id}");
    assert!(parts[1].parse::<u64>().unwrap() > 1_600_000_000_000);
    assert_eq!(c.connected["userId"], "u1");
    assert!(c.connected["timestamp"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn token_in_authorization_header_works() {
    let gw = TestGateway::spawn().await;
    let token = gw.token("u2", json!({}));
    let c =
        Client::connect_with_headers(&gw.ws_url(""), &[("authorization", &format!("Bearer {token}"))]).await.unwrap();
    assert_eq!(c.connected["userId"], "u2");
}

#[tokio::test]
async fn bad_tokens_are_refused_with_401_json() {
    let gw = TestGateway::spawn().await;
    let expired = token_with(SECRET, "u", json!({"exp": now() - 30}));
    let wrong_key = token_with("another-secret-0123456789", "u", json!({}));
    let no_exp = {
        use jsonwebtoken::{EncodingKey, Header, encode};
        encode(&Header::default(), &json!({"sub": "u"}), &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
    };
    let refresh_type = token_with(SECRET, "u", json!({"token_type": "refresh"}));
    let not_yet = token_with(SECRET, "u", json!({"nbf": now() + 600}));
    // {"alg":"none"} with a valid-looking payload and no signature.
    let alg_none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1IiwiZXhwIjo5OTk5OTk5OTk5fQ.".to_owned();
    for (what, query) in [
        ("missing", String::new()),
        ("garbage", "?token=garbage".into()),
        ("expired", format!("?token={expired}")),
        ("wrong key", format!("?token={wrong_key}")),
        ("no exp", format!("?token={no_exp}")),
        ("token_type refresh", format!("?token={refresh_type}")),
        ("nbf in future", format!("?token={not_yet}")),
        ("alg none", format!("?token={alg_none}")),
    ] {
        let (status, body) = refused_upgrade(&gw.ws_url(&query), &[]).await;
        assert_eq!(status, 401, "{what}");
        assert_eq!(body["error"]["code"], "AUTHENTICATION_ERROR", "{what}: {body}");
    }
    // The server is unaffected.
    gw.connect("u", json!({})).await;
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let gw = TestGateway::spawn_with(|c| {
        c.auth.jwt_issuer = Some("https://auth.example".into());
        c.auth.jwt_audience = Some("signalbox".into());
    })
    .await;
    let good = gw.token("u", json!({"iss": "https://auth.example", "aud": "signalbox"}));
    Client::connect(&gw.ws_url(&format!("?token={good}"))).await;
    for bad in [
        json!({"iss": "https://evil", "aud": "signalbox"}),
        json!({"iss": "https://auth.example", "aud": "x"}),
        json!({}),
    ] {
        let t = gw.token("u", bad.clone());
        assert_eq!(refused_upgrade(&gw.ws_url(&format!("?token={t}")), &[]).await.0, 401, "{bad}");
    }
}

#[tokio::test]
async fn rs256_and_es256_public_keys_verify_tokens() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (alg, private, public) in
        [(Algorithm::RS256, "rsa_private.pem", "rsa_public.pem"), (Algorithm::ES256, "ec_private.pem", "ec_public.pem")]
    {
        let public_path = dir.join(public);
        let gw = TestGateway::spawn_with(|c| {
            c.auth.jwt_secret = None;
            c.auth.jwt_public_key_file = Some(public_path.clone());
        })
        .await;
        let pem = std::fs::read(dir.join(private)).unwrap();
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem).unwrap(),
            _ => EncodingKey::from_ec_pem(&pem).unwrap(),
        };
        let token = encode(&Header::new(alg), &json!({"sub": "k", "exp": now() + 60}), &key).unwrap();
        let c = Client::connect(&gw.ws_url(&format!("?token={token}"))).await;
        assert_eq!(c.connected["userId"], "k");
        // An HS256 token signed with the public key text (the classic confusion attack) fails.
        let public_pem = std::fs::read(&public_path).unwrap();
        let confused = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "k", "exp": now() + 60}),
            &EncodingKey::from_secret(&public_pem),
        )
        .unwrap();
        assert_eq!(refused_upgrade(&gw.ws_url(&format!("?token={confused}")), &[]).await.0, 401);
    }
}

#[tokio::test]
async fn dev_mode_allows_anonymous_and_opens_topics() {
    let gw = TestGateway::spawn_with(|c| c.dev = true).await;
    let mut c = gw.connect_dev("").await;
    assert_eq!(c.connected["userId"], "anonymous");
    c.subscribe("project:any").await;
    // A bad token is still refused in dev mode.
    assert_eq!(refused_upgrade(&gw.ws_url("?token=garbage"), &[]).await.0, 401);
}

#[tokio::test]
async fn allowed_origins_refuse_other_origins_with_403() {
    let gw = TestGateway::spawn_with(|c| c.allowed_origins = vec!["https://app.example.com".into()]).await;
    let token = gw.token("u", json!({}));
    let url = gw.ws_url(&format!("?token={token}"));
    let (status, body) = refused_upgrade(&url, &[("origin", "https://evil.example.com")]).await;
    assert_eq!(status, 403, "{body}");
    Client::connect_with_headers(&url, &[("origin", "https://app.example.com")]).await.unwrap();
    // Non-browser clients send no Origin.
    Client::connect(&url).await;
}

#[tokio::test]
async fn topic_access_follows_claims_owner_rule_role_and_namespaces() {
    use signalbox::config::{NamespaceConfig, SubscribePolicy};
    let gw = TestGateway::spawn_with(|c| {
        c.namespaces.insert(
            "lobby".into(),
            NamespaceConfig { subscribe: SubscribePolicy::Authenticated, ..Default::default() },
        );
        c.namespaces
            .insert("inbox".into(), NamespaceConfig { subscribe: SubscribePolicy::Owner, ..Default::default() });
    })
    .await;
    let mut c = gw.connect("u1", json!({"topics": ["job:*", "project:42"]})).await;
    for allowed in ["job:abc", "project:42", "user:u1", "global", "lobby:main", "inbox:u1"] {
        c.subscribe(allowed).await;
    }
    for denied in ["project:43", "user:u2", "agent:x", "inbox:u2"] {
        let r = c.request(json!({"action": "subscribe", "topic": denied, "requestId": "d"})).await;
        assert_eq!(
            (r["type"].as_str(), r["code"].as_str(), r["requestId"].as_str()),
            (Some("error"), Some("AUTHORIZATION_ERROR"), Some("d")),
            "{denied}"
        );
    }
    let mut admin = gw.connect("root", json!({"role": "admin"})).await;
    admin.subscribe("user:u1").await;
    admin.subscribe("agent:x").await;
}

#[tokio::test]
async fn automatic_subscriptions_to_user_topic_and_global() {
    let gw = TestGateway::spawn().await;
    let mut c = gw.connect("u7", json!({})).await;
    let r = c.request(json!({"action": "subscriptions"})).await;
    let mut topics: Vec<_> = r["topics"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect();
    topics.sort();
    assert_eq!(topics, ["global", "user:u7"]);
    let api = gw.http();
    api.publish("user:u7", json!({"type": "notification", "text": "hi"})).await;
    let ev = c.recv().await;
    assert_eq!((ev["topic"].as_str(), ev["type"].as_str()), (Some("user:u7"), Some("notification")));
    let (status, _) = api.post("/api/broadcast", json!({"event": {"type": "maintenance"}})).await;
    assert_eq!(status, 200);
    assert_eq!(c.recv().await["topic"], "global");
}

#[tokio::test]
async fn refresh_replaces_token_and_expiry_closes_with_4001() {
    let gw = TestGateway::spawn().await;
    let short = token_with(SECRET, "u", json!({"exp": now() + 2}));
    let mut c = Client::connect(&gw.ws_url(&format!("?token={short}"))).await;
    // Wrong user: refused, old token stays.
    let other = gw.token("someone-else", json!({}));
    let r = c.request(json!({"action": "refresh", "token": other, "requestId": "x"})).await;
    assert_eq!((r["code"].as_str(), r["requestId"].as_str()), (Some("AUTHENTICATION_ERROR"), Some("x")));
    let r = c.request(json!({"action": "refresh", "data": {"token": "garbage"}})).await;
    assert_eq!(r["code"], "AUTHENTICATION_ERROR");
    // Same user, later expiry: accepted; the connection outlives the first token.
    let longer = token_with(SECRET, "u", json!({"exp": now() + 4}));
    let r = c.request(json!({"action": "refresh", "token": longer})).await;
    assert_eq!(r["type"], "refreshed", "{r}");
    assert!(r["expiresAt"].as_str().unwrap().ends_with('Z'));
    c.expect_silence(std::time::Duration::from_millis(2500)).await;
    let mut before = Vec::new();
    assert_eq!(c.expect_close(&mut before).await, 4001);
}
