//! Signing keys: each algorithm signs the sign-in story; verification pins the
//! key's algorithm and refuses every forgery; rotation publishes before it
//! signs and retires after the last token expired; revocation is immediate;
//! and a verifier we did not write (PyJWT) agrees at every step.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse::clock::Clock;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{ADMIN, Backend, JWT_SECRET, TestApp, assert_problem};

/// The defaults: the publish delay, and how long a superseded key's tokens
/// may live on (access-token lifetime 900 s + 5 s leeway).
const PUBLISH_DELAY: Duration = Duration::from_secs(600);
const GRACE: Duration = Duration::from_secs(905);

fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("a JWT")
        .kid
        .expect("a kid")
}

fn access(grant: &Value) -> String {
    grant["access_token"]
        .as_str()
        .expect("access token")
        .to_owned()
}

impl TestApp {
    async fn jwks(&self) -> Value {
        let response = self
            .client
            .get(self.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap();
        TestApp::json_ok(response, 200).await
    }

    async fn jwks_kids(&self) -> Vec<String> {
        self.jwks().await["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn signing_keys(&self, admin: &str) -> Vec<Value> {
        let list = self.get_as("/v1/admin/signing-keys", admin).await;
        TestApp::json_ok(list, 200).await["items"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// `(kid, state)` of every key, oldest activation first.
    async fn key_states(&self, admin: &str) -> Vec<(String, String)> {
        self.signing_keys(admin)
            .await
            .iter()
            .map(|k| {
                let text = |name: &str| k[name].as_str().unwrap().to_owned();
                (text("kid"), text("state"))
            })
            .collect()
    }

    async fn rotate(&self, admin: &str) -> reqwest::Response {
        self.post_json_as("/v1/admin/signing-keys/rotate", admin, json!({}))
            .await
    }

    async fn revoke_signing_key(&self, admin: &str, kid: &str) -> reqwest::Response {
        self.send_as(
            reqwest::Method::DELETE,
            &format!("/v1/admin/signing-keys/{kid}"),
            admin,
            None,
        )
        .await
    }

    async fn refresh(&self, grant: &Value) -> Value {
        let response = self
            .post_json(
                "/v1/auth/refresh",
                json!({ "refresh_token": grant["refresh_token"] }),
            )
            .await;
        TestApp::json_ok(response, 200).await
    }

    async fn me_status(&self, token: &str) -> u16 {
        self.get_as("/v1/me", token).await.status().as_u16()
    }
}

/// Each algorithm signs in, reads `/v1/me`, refreshes and logs out; ES256 and
/// EdDSA publish their key, HS256 publishes none.
async fn each_algorithm_runs_the_sign_in_story(backend: Backend) {
    for (setting, alg) in [
        ("ES256", Algorithm::ES256),
        ("EdDSA", Algorithm::EdDSA),
        ("HS256", Algorithm::HS256),
    ] {
        let app = TestApp::spawn_with(backend, &[("jwt_alg", setting)]).await;
        let grant = app.sign_in(ADMIN).await;
        let token = access(&grant);
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, alg, "{setting}");
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(app.me_status(&token).await, 200, "{setting}");
        let refreshed = app.refresh(&grant).await;
        assert_eq!(kid_of(&access(&refreshed)), kid_of(&token));
        let jwks = app.jwks().await;
        let keys = jwks["keys"].as_array().unwrap();
        if alg == Algorithm::HS256 {
            assert!(keys.is_empty(), "a shared secret is never published");
        } else {
            assert_eq!(keys.len(), 1, "{jwks}");
            assert_eq!(keys[0]["kid"], kid_of(&token).as_str());
            assert_eq!(keys[0]["alg"], setting);
            assert_eq!(keys[0]["use"], "sig");
            assert!(keys[0].get("d").is_none(), "no private part: {jwks}");
        }
        let logout = app
            .post_json_as("/v1/auth/logout", &access(&refreshed), json!({}))
            .await;
        assert_eq!(logout.status(), 204);
        assert_eq!(app.me_status(&access(&refreshed)).await, 401, "{setting}");
    }
}

/// A token whose header names a key by its RFC 7515 parts, signed with `key`.
fn forge(header: Value, claims: &Value, alg: Algorithm, key: &EncodingKey) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).unwrap();
    format!("{input}.{signature}")
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// Every way of naming or bending the key is refused, with the same 401.
async fn tokens_that_bend_the_key_or_algorithm_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.admin_token().await;
    let kid = kid_of(&token);
    let claims = claims_of(&token);
    let jwk = app.jwks().await["keys"][0].clone();
    let hs = |secret: &[u8]| EncodingKey::from_secret(secret);
    let payload = token.split('.').nth(1).unwrap().to_owned();
    let signature = token.split('.').nth(2).unwrap().to_owned();
    let with_header = |header: Value| {
        let header = URL_SAFE_NO_PAD.encode(header.to_string());
        format!("{header}.{payload}.{signature}")
    };
    let probes = [
        (
            "HS256 signed with the published public key",
            forge(
                json!({ "alg": "HS256", "typ": "at+jwt", "kid": kid }),
                &claims,
                Algorithm::HS256,
                &hs(jwk.to_string().as_bytes()),
            ),
        ),
        (
            "HS256 signed with the public key's x coordinate",
            forge(
                json!({ "alg": "HS256", "typ": "at+jwt", "kid": kid }),
                &claims,
                Algorithm::HS256,
                &hs(jwk["x"].as_str().unwrap().as_bytes()),
            ),
        ),
        (
            "HS256 signed with the server secret, under the ES256 key's kid",
            forge(
                json!({ "alg": "HS256", "typ": "at+jwt", "kid": kid }),
                &claims,
                Algorithm::HS256,
                &hs(JWT_SECRET.as_bytes()),
            ),
        ),
        (
            "unknown kid",
            forge(
                json!({ "alg": "HS256", "typ": "at+jwt", "kid": "no-such-key" }),
                &claims,
                Algorithm::HS256,
                &hs(JWT_SECRET.as_bytes()),
            ),
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                URL_SAFE_NO_PAD
                    .encode(json!({ "alg": "none", "typ": "at+jwt", "kid": kid }).to_string()),
                token.split('.').nth(1).unwrap()
            ),
        ),
        (
            "ES384 under the ES256 key",
            with_header(json!({ "alg": "ES384", "typ": "at+jwt", "kid": kid })),
        ),
        (
            "EdDSA under the ES256 key",
            with_header(json!({ "alg": "EdDSA", "typ": "at+jwt", "kid": kid })),
        ),
    ];
    for (name, forged) in probes {
        let response = app.get_as("/v1/me", &forged).await;
        assert_eq!(response.headers()["www-authenticate"], "Bearer", "{name}");
        assert_problem(response, 401).await;
    }
    assert_eq!(app.me_status(&token).await, 200);
}

/// With HS256 the test holds the key, so each probe is correctly signed and
/// differs from a good token in one header field only.
async fn correctly_signed_tokens_with_a_bent_header_are_refused(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("jwt_alg", "HS256")]).await;
    let token = app.admin_token().await;
    let kid = kid_of(&token);
    let claims = claims_of(&token);
    let secret = EncodingKey::from_secret(JWT_SECRET.as_bytes());
    let good = forge(
        json!({ "alg": "HS256", "typ": "at+jwt", "kid": kid }),
        &claims,
        Algorithm::HS256,
        &secret,
    );
    assert_eq!(app.me_status(&good).await, 200, "the control verifies");
    let probes = [
        (
            "no typ",
            json!({ "alg": "HS256", "kid": kid }),
            Algorithm::HS256,
        ),
        (
            "another token kind",
            json!({ "alg": "HS256", "typ": "JWT", "kid": kid }),
            Algorithm::HS256,
        ),
        (
            "unknown kid",
            json!({ "alg": "HS256", "typ": "at+jwt", "kid": "hs256-0000000000000000" }),
            Algorithm::HS256,
        ),
        (
            "no kid",
            json!({ "alg": "HS256", "typ": "at+jwt" }),
            Algorithm::HS256,
        ),
        (
            "HS512 under the HS256 key",
            json!({ "alg": "HS512", "typ": "at+jwt", "kid": kid }),
            Algorithm::HS512,
        ),
    ];
    for (name, header, alg) in probes {
        let forged = forge(header, &claims, alg, &secret);
        let response = app.get_as("/v1/me", &forged).await;
        assert_eq!(response.status(), 401, "{name}");
        assert_problem(response, 401).await;
    }
}

/// A rotation publishes the next key at once and signs with it only after the
/// publish delay; the old key is accepted and published until its last token
/// expired; every step is audited.
async fn a_rotation_publishes_first_signs_later_and_retires_the_old_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let grant = app.sign_in(ADMIN).await;
    let admin = access(&grant);
    let old = kid_of(&admin);

    let rotated = TestApp::json_ok(app.rotate(&admin).await, 201).await;
    let new = rotated["kid"].as_str().unwrap().to_owned();
    assert_eq!(rotated["state"], "next");
    assert_eq!(app.jwks_kids().await, [old.clone(), new.clone()]);
    let before = app.refresh(&grant).await;
    assert_eq!(
        kid_of(&access(&before)),
        old,
        "the next key does not sign yet"
    );
    let pending = app.rotate(&admin).await;
    assert_eq!(
        assert_problem(pending, 409).await["code"],
        "rotation_pending"
    );

    app.clock().advance(PUBLISH_DELAY);
    let after = app.refresh(&before).await;
    assert_eq!(
        kid_of(&access(&after)),
        new,
        "the next key signs after the delay"
    );
    assert_eq!(app.me_status(&admin).await, 200, "old tokens still verify");
    let states = app.key_states(&access(&after)).await;
    assert_eq!(
        states,
        [
            (old.clone(), "retiring".into()),
            (new.clone(), "current".into())
        ]
    );
    let listed = app.signing_keys(&access(&after)).await;
    assert!(listed[0]["retires_at"].is_string(), "{listed:?}");
    assert_eq!(app.jwks_kids().await, [old.clone(), new.clone()]);

    app.clock().advance(GRACE);
    assert_eq!(
        app.jwks_kids().await,
        std::slice::from_ref(&new),
        "retired: left the JWKS"
    );
    let fresh = app.sign_in(ADMIN).await;
    let states = app.key_states(&access(&fresh)).await;
    assert_eq!(states, [(old, "retired".into()), (new, "current".into())]);

    let audit = app
        .get_as(
            "/v1/admin/audit?action=signing_key.rotated",
            &access(&fresh),
        )
        .await;
    let rows = TestApp::json_ok(audit, 200).await;
    assert_eq!(rows["items"].as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows["items"][0]["target"], rotated["kid"]);
    let created = app
        .get_as(
            "/v1/admin/audit?action=signing_key.created",
            &access(&fresh),
        )
        .await;
    let rows = TestApp::json_ok(created, 200).await;
    assert_eq!(rows["items"][0]["actor"], "system", "{rows}");
}

/// Revoking a key refuses its tokens at once and drops it from the JWKS; when
/// it was signing, a fresh key takes over at once.
async fn a_revoked_key_is_refused_at_once_and_replaced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let grant = app.sign_in(ADMIN).await;
    let token = access(&grant);
    let old = kid_of(&token);

    let revoked = app.revoke_signing_key(&token, &old).await;
    assert_eq!(revoked.status(), 204);
    assert_problem(app.get_as("/v1/me", &token).await, 401).await;
    let kids = app.jwks_kids().await;
    assert!(!kids.contains(&old), "{kids:?}");
    assert_eq!(kids.len(), 1, "a replacement signs at once");

    let fresh = app.refresh(&grant).await;
    let admin = access(&fresh);
    assert_eq!(kid_of(&admin), kids[0]);
    assert_eq!(app.me_status(&admin).await, 200);
    let states = app.key_states(&admin).await;
    assert!(
        states.contains(&(old.clone(), "revoked".into())),
        "{states:?}"
    );

    let again = app.revoke_signing_key(&admin, &old).await;
    assert_problem(again, 404).await;
    assert_problem(app.revoke_signing_key(&admin, "no-such-key").await, 404).await;
    let audit = app
        .get_as("/v1/admin/audit?action=signing_key.revoked", &admin)
        .await;
    let rows = TestApp::json_ok(audit, 200).await;
    assert_eq!(rows["items"][0]["target"], old.as_str(), "{rows}");

    // Members are not admins: the key operations are refused.
    app.allowlist(&admin, "member@example.org", &[]).await;
    let member = access(&app.sign_in("member@example.org").await);
    assert_problem(app.rotate(&member).await, 403).await;
    assert_problem(app.get_as("/v1/admin/signing-keys", &member).await, 403).await;
    assert_problem(app.revoke_signing_key(&member, &kids[0]).await, 403).await;
}

/// HS256 has no key to rotate (the server secret signs); the refusal says so.
async fn hs256_refuses_rotation_and_publishes_nothing(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("jwt_alg", "HS256")]).await;
    let admin = app.admin_token().await;
    let refused = assert_problem(app.rotate(&admin).await, 409).await;
    assert_eq!(refused["code"], "shared_secret");
    assert!(app.jwks_kids().await.is_empty());
}

/// The discovery document and the JWKS say who issues and how long to cache.
async fn discovery_names_the_issuer_and_the_jwks(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("public_url", "https://id.example.org")]).await;
    let response = app
        .client
        .get(app.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["cache-control"], "public, max-age=300");
    let config = TestApp::json_ok(response, 200).await;
    assert_eq!(config["issuer"], "https://id.example.org");
    assert_eq!(
        config["jwks_uri"],
        "https://id.example.org/.well-known/jwks.json"
    );
    let response = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["cache-control"], "public, max-age=300");
    // Everything else stays uncacheable.
    let me = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(me.headers()["cache-control"], "no-store");
}

/// Changing `jwt_alg` keeps accepting the old key's tokens, and signs with the
/// new algorithm after the publish delay. (A fixed public URL keeps the issuer
/// across the restart; refreshes stand in for sign-ins, whose mail the
/// restarted app would look for anew.)
async fn a_changed_algorithm_takes_over_after_the_publish_delay(backend: Backend) {
    let public_url = ("public_url", "https://id.example.org");
    let app = TestApp::spawn_with(backend, &[public_url]).await;
    let grant = app.sign_in(ADMIN).await;
    let es256 = access(&grant);
    let app = app.restart_with(&[("jwt_alg", "EdDSA")]).await;
    assert_eq!(app.me_status(&es256).await, 200, "old tokens keep working");
    let still = app.refresh(&grant).await;
    let alg = |grant: &Value| jsonwebtoken::decode_header(&access(grant)).unwrap().alg;
    assert_eq!(alg(&still), Algorithm::ES256);
    assert_eq!(
        app.jwks_kids().await.len(),
        2,
        "the EdDSA key is published first"
    );
    app.clock().advance(PUBLISH_DELAY);
    let eddsa = app.refresh(&still).await;
    assert_eq!(alg(&eddsa), Algorithm::EdDSA);
    assert_eq!(app.me_status(&access(&eddsa)).await, 200);
    assert_eq!(app.me_status(&es256).await, 200, "until they expire");
}

/// An installation that had members before signing keys were stored keeps
/// HS256, which its integrators verify with the shared secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installation_from_before_signing_keys_keeps_hs256() {
    use sqlx::Connection;
    let app = TestApp::spawn(Backend::Sqlite).await;
    let grant = app.sign_in(ADMIN).await;
    let url = app.setting("database_url").to_owned();
    let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("DELETE FROM signing_keys")
        .execute(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();
    let app = app.restart_with(&[]).await;
    let refreshed = app.refresh(&grant).await;
    let header = jsonwebtoken::decode_header(&access(&refreshed)).unwrap();
    assert_eq!(header.alg, Algorithm::HS256);
    assert!(app.jwks_kids().await.is_empty());
}

/// PyJWT, discovering the keys from the issuer, verifies what gatehouse signs
/// before a rotation, across the publish delay, after it, and refuses what a
/// revocation withdrew.
async fn pyjwt_verifies_tokens_across_rotation_and_revocation(alg: &str) {
    // The app runs 700 s behind: tokens stay live on PyJWT's real-time clock
    // through the publish delay the test moves across.
    let clock = Clock::system();
    clock.set(chrono::Utc::now().timestamp() - 700);
    let app = TestApp::spawn_at(Backend::Sqlite, &[("jwt_alg", alg)], clock).await;
    let issuer = format!("http://{}", app.addr);
    let verify = async |tokens: Vec<(&str, String)>| {
        let issuer = issuer.clone();
        let tokens: serde_json::Map<String, Value> = tokens
            .into_iter()
            .map(|(name, token)| (name.to_owned(), Value::String(token)))
            .collect();
        tokio::task::spawn_blocking(move || pyjwt(&issuer, tokens))
            .await
            .expect("the verifier ran")
    };

    let grant = app.sign_in(ADMIN).await;
    let first = access(&grant);
    let old = kid_of(&first);
    let out = verify(vec![("first", first.clone())]).await;
    assert_verified(&out, "first", &old);
    assert_eq!(out["jwks_kids"], json!([old]));

    let rotated = TestApp::json_ok(app.rotate(&first).await, 201).await;
    let new = rotated["kid"].as_str().unwrap().to_owned();
    let during = app.refresh(&grant).await;
    let out = verify(vec![("first", first.clone()), ("during", access(&during))]).await;
    assert_verified(&out, "first", &old);
    assert_verified(&out, "during", &old);
    assert_eq!(
        out["jwks_kids"],
        json!([old, new]),
        "published before it signs"
    );

    app.clock().advance(PUBLISH_DELAY + Duration::from_secs(1));
    let after = app.refresh(&during).await;
    let out = verify(vec![("first", first.clone()), ("after", access(&after))]).await;
    assert_verified(&out, "first", &old);
    assert_verified(&out, "after", &new);

    let revoked = app.revoke_signing_key(&access(&after), &old).await;
    assert_eq!(revoked.status(), 204);
    let out = verify(vec![("first", first.clone()), ("after", access(&after))]).await;
    assert_eq!(out["results"]["first"]["ok"], false, "{out}");
    assert_verified(&out, "after", &new);
    assert_eq!(out["jwks_kids"], json!([new]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyjwt_verifies_es256_tokens_across_rotation_and_revocation() {
    pyjwt_verifies_tokens_across_rotation_and_revocation("ES256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyjwt_verifies_eddsa_tokens_across_rotation_and_revocation() {
    pyjwt_verifies_tokens_across_rotation_and_revocation("EdDSA").await;
}

fn assert_verified(out: &Value, name: &str, kid: &str) {
    let result = &out["results"][name];
    assert_eq!(result["ok"], true, "PyJWT refused {name}: {out}");
    assert_eq!(result["kid"], kid, "{name}: {out}");
}

/// Runs `tests/verifiers/pyjwt_verify.py` (python3, or `GATEHOUSE_TEST_PYTHON`).
fn pyjwt(issuer: &str, tokens: serde_json::Map<String, Value>) -> Value {
    use std::io::Write;
    let python = std::env::var("GATEHOUSE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("verifiers")
        .join("pyjwt_verify.py");
    let request = json!({
        "issuer": issuer,
        "audience": "gatehouse",
        "tokens": tokens,
    });
    let mut child = std::process::Command::new(&python)
        .arg(&script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {python} ({e}): the PyJWT verifier needs Python 3 with `pip install 'pyjwt[crypto]'` (.ci/run installs it)")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.code() != Some(3),
        "the PyJWT verifier cannot run: {stderr}"
    );
    assert!(output.status.success(), "pyjwt_verify.py failed: {stderr}");
    serde_json::from_slice(&output.stdout).expect("pyjwt_verify.py prints JSON")
}

/// Two instances on one Postgres, configured alike, as behind a load balancer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sign_with_one_key_and_see_rotation_and_revocation() {
    let public_url = ("public_url", "https://id.example.org");
    let a = TestApp::spawn_with(Backend::Postgres, &[public_url]).await;
    let database_url = a.setting("database_url").to_owned();
    let data_dir = a.dir.path().display().to_string();
    let b = TestApp::spawn_with(
        Backend::Postgres,
        &[
            public_url,
            ("database_url", &database_url),
            ("data_dir", &data_dir),
        ],
    )
    .await;
    // Mail lands in A's data dir: both sessions start there, B's is refreshed on B.
    let on_a = a.sign_in(ADMIN).await;
    let on_b = b.refresh(&a.sign_in(ADMIN).await).await;
    let first = kid_of(&access(&on_a));
    assert_eq!(kid_of(&access(&on_b)), first, "one key signs on both");
    assert_eq!(b.me_status(&access(&on_a)).await, 200);

    let rotated = TestApp::json_ok(a.rotate(&access(&on_a)).await, 201).await;
    let next = rotated["kid"].as_str().unwrap().to_owned();
    eventually("B publishes the key A rotated in", async || {
        b.jwks_kids().await.contains(&next)
    })
    .await;
    a.clock().advance(PUBLISH_DELAY);
    b.clock().advance(PUBLISH_DELAY);
    let on_b = b.refresh(&on_b).await;
    assert_eq!(
        kid_of(&access(&on_b)),
        next,
        "B signs with it after the delay"
    );
    assert_eq!(a.me_status(&access(&on_b)).await, 200);

    let revoked = a.revoke_signing_key(&access(&on_a), &next).await;
    assert_eq!(revoked.status(), 204);
    assert_eq!(a.me_status(&access(&on_b)).await, 401, "at once on A");
    eventually("B refuses the revoked key's token", async || {
        b.me_status(&access(&on_b)).await == 401
    })
    .await;
    let on_b = b.refresh(&on_b).await;
    let replacement = kid_of(&access(&on_b));
    assert!(replacement != next && replacement != first);
    assert_eq!(
        a.me_status(&access(&on_b)).await,
        200,
        "A knows the replacement"
    );
}

/// With `signing_key_rotate_days`, a key that has signed that long is rotated
/// by gatehouse itself (checked at each reload, every second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_themselves_every_n_days() {
    let app = TestApp::spawn_with(Backend::Sqlite, &[("signing_key_rotate_days", "1")]).await;
    let grant = app.sign_in(ADMIN).await;
    app.clock().advance(Duration::from_secs(86_400));
    let admin = access(&app.refresh(&grant).await);
    eventually("a scheduled rotation", async || {
        app.key_states(&admin)
            .await
            .iter()
            .any(|(_, state)| state == "next")
    })
    .await;
    let keys = app.signing_keys(&admin).await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[1]["created_by"], "system");
}

/// Polls `done` until it holds, for at most 5 s (a change notice normally
/// arrives within milliseconds; the reload interval bounds it at a second).
async fn eventually(never: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !done().await {
        assert!(std::time::Instant::now() < deadline, "{never} within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

backend_tests!(
    each_algorithm_runs_the_sign_in_story,
    tokens_that_bend_the_key_or_algorithm_are_refused,
    correctly_signed_tokens_with_a_bent_header_are_refused,
    a_rotation_publishes_first_signs_later_and_retires_the_old_key,
    a_revoked_key_is_refused_at_once_and_replaced,
    hs256_refuses_rotation_and_publishes_nothing,
    discovery_names_the_issuer_and_the_jwks,
    a_changed_algorithm_takes_over_after_the_publish_delay,
);
