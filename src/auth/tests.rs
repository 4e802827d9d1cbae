//! Request validation, error codes, identities and room policy, with a canned OpenID verifier.
//! The real OpenID path (a real Synapse) is covered by tests/e2e/test_auth_synapse.py.

use std::collections::HashMap;

use std::sync::Mutex;

use serde_json::json;

use super::*;
use crate::rooms::RoomRegistry;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// Knows which access token belongs to whom; records the policy each lookup was made under.
struct Canned {
    users: HashMap<&'static str, &'static str>,
    policies: Mutex<Vec<(String, AddressPolicy)>>,
}

impl OpenIdVerifier for Canned {
    fn verify<'a>(
        &'a self,
        server_name: &'a str,
        access_token: &'a Secret,
        policy: AddressPolicy,
    ) -> Pin<Box<dyn Future<Output = Result<String, UserInfoError>> + Send + 'a>> {
        self.policies
            .lock()
            .unwrap()
            .push((server_name.to_owned(), policy));
        let answer = match self.users.get(access_token.expose()) {
            Some(user) => crate::matrix::parse_userinfo(
                json!({ "sub": user }).to_string().as_bytes(),
                server_name,
            ),
            None => Err(UserInfoError::Status(401)),
        };
        Box::pin(async move { answer })
    }
}

/// Records accepted delegations; refuses them all with `refuse` when set.
#[derive(Default)]
struct Delegations {
    accepted: Mutex<Vec<Delegation>>,
    refuse: Mutex<Option<fn() -> DelegationError>>,
}

impl DelegateLeave for Delegations {
    fn delegate(
        &self,
        delegation: Delegation,
    ) -> Pin<Box<dyn Future<Output = Result<(), DelegationError>> + Send + '_>> {
        let result = match *self.refuse.lock().unwrap() {
            Some(refusal) => Err(refusal()),
            None => {
                self.accepted.lock().unwrap().push(delegation);
                Ok(())
            }
        };
        Box::pin(async move { result })
    }
}

fn service() -> (AuthService, Arc<Canned>) {
    let (service, canned, _, _) = service_with_all();
    (service, canned)
}

fn service_with_rooms() -> (AuthService, Arc<Canned>, Arc<Mutex<RoomRegistry>>) {
    let (service, canned, rooms, _) = service_with_all();
    (service, canned, rooms)
}

/// The service, the registry it creates rooms in and the delegations it made.
fn service_with_all() -> (
    AuthService,
    Arc<Canned>,
    Arc<Mutex<RoomRegistry>>,
    Arc<Delegations>,
) {
    let canned = Arc::new(Canned {
        users: HashMap::from([
            ("alice-token", "@alice:home.example"),
            ("bob-token", "@bob:remote.example"),
        ]),
        policies: Mutex::new(Vec::new()),
    });
    let config = AuthConfig {
        public_url: PublicUrl::parse("wss://rtc.home.example/livekit/sfu").unwrap(),
        api_key: ApiKey::parse("APItest").unwrap(),
        api_secret: Secret::new(SECRET),
        full_access: FullAccess::parse("home.example").unwrap(),
        dangerous_allow_private_homeservers: false,
    };
    let rooms = Arc::new(Mutex::new(RoomRegistry::new()));
    let delegations = Arc::new(Delegations::default());
    let service = AuthService::new(config, canned.clone(), rooms.clone(), delegations.clone());
    (service, canned, rooms, delegations)
}

fn openid(token: &str, server: &str) -> serde_json::Value {
    json!({"access_token": token, "token_type": "Bearer", "matrix_server_name": server, "expires_in": 3600})
}

fn legacy(token: &str, server: &str) -> serde_json::Value {
    json!({"room": "!room:home.example", "openid_token": openid(token, server), "device_id": "DEV"})
}

fn msc4195(token: &str, server: &str, user: &str) -> serde_json::Value {
    json!({
        "room_id": "!room:home.example", "slot_id": "m.call#ROOM", "openid_token": openid(token, server),
        "member": {"id": "member1", "claimed_user_id": user, "claimed_device_id": "DEV"},
    })
}

fn run(
    fut: impl Future<Output = Result<TokenResponse, AuthError>>,
) -> Result<TokenResponse, AuthError> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(fut)
}

fn check_error(result: Result<TokenResponse, AuthError>, status: u16, errcode: &str, text: &str) {
    let err = result.expect_err("must be refused");
    assert_eq!(
        (err.status.as_u16(), err.errcode),
        (status, errcode),
        "{err:?}"
    );
    assert!(
        err.error.contains(text),
        "{:?} should contain {text:?}",
        err.error
    );
}

fn claims(response: &TokenResponse) -> token::Claims {
    token::verify(
        &response.jwt,
        &ApiKey::parse("APItest").unwrap(),
        &Secret::new(SECRET),
    )
    .unwrap()
}

#[test]
fn sfu_get_issues_a_token_for_the_legacy_identity() {
    let (service, _) = service();
    let response =
        run(service.sfu_get(legacy("alice-token", "home.example").to_string().as_bytes())).unwrap();
    assert_eq!(response.url, "wss://rtc.home.example/livekit/sfu");
    let claims = claims(&response);
    assert_eq!(claims.iss, "APItest");
    assert_eq!(claims.sub, "@alice:home.example:DEV");
    assert_eq!(claims.exp - claims.nbf.unwrap(), 3600);
    let video = claims.video.unwrap();
    assert_eq!(
        video.room,
        derive::room_alias("!room:home.example", "m.call#ROOM")
    );
    assert!(video.room_join);
    assert_eq!(
        (video.can_publish, video.can_subscribe),
        (Some(true), Some(true))
    );
}

#[test]
fn get_token_issues_a_token_for_the_hashed_identity() {
    let (service, _) = service();
    let body = msc4195("alice-token", "home.example", "@alice:home.example");
    let response = run(service.get_token(body.to_string().as_bytes())).unwrap();
    let claims = claims(&response);
    assert_eq!(
        claims.sub,
        derive::rtc_identity("@alice:home.example", "DEV", "member1")
    );
    // Both endpoints land in the same LiveKit room for the same Matrix room.
    assert_eq!(
        claims.video.unwrap().room,
        derive::room_alias("!room:home.example", "m.call#ROOM")
    );
}

#[test]
fn validation_order_and_codes_match_lk_jwt_service() {
    let (service, _) = service();
    let sfu = |body: serde_json::Value| run(service.sfu_get(body.to_string().as_bytes()));
    let tok = |body: serde_json::Value| run(service.get_token(body.to_string().as_bytes()));

    for garbage in ["", "{", "[]", "null", "\"x\"", "\u{0}\u{1}"] {
        check_error(
            run(service.sfu_get(garbage.as_bytes())),
            400,
            "M_NOT_JSON",
            "Error reading request",
        );
        check_error(
            run(service.get_token(garbage.as_bytes())),
            400,
            "M_NOT_JSON",
            "Error reading request",
        );
    }
    // Wrong types are unreadable, as with Go's decoder.
    check_error(
        sfu(json!({"room": 5})),
        400,
        "M_NOT_JSON",
        "Error reading request",
    );
    check_error(
        tok(json!({"room_id": ["!r:x"]})),
        400,
        "M_NOT_JSON",
        "Error reading request",
    );
    check_error(sfu(json!({})), 400, "M_BAD_JSON", "Missing room parameter");
    check_error(
        sfu(json!({"room": "!r:x", "openid_token": {}})),
        400,
        "M_BAD_JSON",
        "Missing OpenID token",
    );
    check_error(
        sfu(
            json!({"room": "!r:x", "openid_token": {"access_token": "t", "matrix_server_name": null}}),
        ),
        400,
        "M_BAD_JSON",
        "Missing OpenID token",
    );
    check_error(
        tok(json!({"room_id": "!r:x"})),
        400,
        "M_BAD_JSON",
        "`room_id` or `slot_id`",
    );
    check_error(
        tok(json!({"room_id": "!r:x", "slot_id": "s"})),
        400,
        "M_BAD_JSON",
        "`member`",
    );
    check_error(
        tok(
            json!({"room_id": "!r:x", "slot_id": "s", "member": {"id": "m", "claimed_user_id": "@a:b", "claimed_device_id": "D"}}),
        ),
        400,
        "M_BAD_JSON",
        "`openid_token`",
    );

    // Half of the delay pair.
    let mut body = legacy("alice-token", "home.example");
    body["delay_id"] = json!("syd_1");
    check_error(
        sfu(body),
        400,
        "M_BAD_JSON",
        "`delay_id` or `delay_timeout`",
    );
    let mut body = msc4195("alice-token", "home.example", "@alice:home.example");
    body["delay_timeout"] = json!(10000);
    check_error(
        tok(body),
        400,
        "M_BAD_JSON",
        "`delay_id` or `delay_timeout`",
    );

    // Unknown OpenID token, and a token of another user than claimed.
    check_error(
        sfu(legacy("forged", "home.example")),
        401,
        "M_UNAUTHORIZED",
        "could not be authorised",
    );
    check_error(
        tok(msc4195(
            "alice-token",
            "home.example",
            "@mallory:home.example",
        )),
        401,
        "M_UNAUTHORIZED",
        "could not be authorised",
    );
    // The token's user is not on the claimed server.
    check_error(
        sfu(legacy("alice-token", "remote.example")),
        401,
        "M_UNAUTHORIZED",
        "",
    );
}

#[test]
fn unknown_fields_and_delay_params_from_full_access_users_are_accepted() {
    let (service, _, _, delegations) = service_with_all();
    let mut body = legacy("alice-token", "home.example");
    body["delay_id"] = json!("syd_1");
    body["delay_timeout"] = json!(10000);
    body["delay_cs_api_url"] = json!("https://elsewhere.example");
    body["something_new"] = json!({"nested": true});
    body["openid_token"]["extra"] = json!(1);
    let response = run(service.sfu_get(body.to_string().as_bytes())).unwrap();

    // The delegation is real: for the token's room and identity, on the user's homeserver (not
    // the client-sent `delay_cs_api_url`).
    let claims = claims(&response);
    let accepted = delegations.accepted.lock().unwrap();
    let [delegation] = accepted.as_slice() else {
        panic!("one delegation expected: {accepted:?}");
    };
    assert_eq!(delegation.room, claims.video.unwrap().room);
    assert_eq!(delegation.identity, claims.sub);
    assert_eq!(delegation.delay_id.expose(), "syd_1");
    assert_eq!(delegation.delay_timeout, Duration::from_secs(10));
    assert_eq!(delegation.server_name, "home.example");
    assert_eq!(delegation.policy, AddressPolicy::AllowPrivate);
}

#[test]
fn get_token_with_delay_params_delegates_for_its_identity() {
    let (service, _, _, delegations) = service_with_all();
    let mut body = msc4195("alice-token", "home.example", "@alice:home.example");
    body["delay_id"] = json!("syd_3");
    body["delay_timeout"] = json!(2500);
    let response = run(service.get_token(body.to_string().as_bytes())).unwrap();
    let accepted = delegations.accepted.lock().unwrap();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].identity, claims(&response).sub);
    assert_eq!(accepted[0].delay_timeout, Duration::from_millis(2500));
}

fn delegate(service: &AuthService, body: serde_json::Value) -> Result<TokenResponse, AuthError> {
    run(async {
        service
            .delegate_delayed_leave(body.to_string().as_bytes())
            .await
            .map(|()| TokenResponse {
                url: String::new(),
                jwt: String::new(),
            })
    })
}

fn delayed(mut body: serde_json::Value) -> serde_json::Value {
    body["delay_id"] = json!("syd_4");
    body["delay_timeout"] = json!(10000);
    body
}

#[test]
fn delegate_delayed_leave_validates_as_lk_jwt_service() {
    let (service, _, rooms, delegations) = service_with_all();
    let alice = || msc4195("alice-token", "home.example", "@alice:home.example");

    for garbage in ["", "{", "[]", "null"] {
        check_error(
            run(async {
                service
                    .delegate_delayed_leave(garbage.as_bytes())
                    .await
                    .map(|()| unreachable!())
            }),
            400,
            "M_NOT_JSON",
            "Error reading request",
        );
    }
    check_error(
        delegate(&service, json!({"room_id": "!r:x"})),
        400,
        "M_BAD_JSON",
        "`room_id` or `slot_id`",
    );
    // The delay parameters are mandatory here, each of them.
    check_error(
        delegate(&service, alice()),
        400,
        "M_BAD_JSON",
        "`delay_id` or `delay_timeout`",
    );
    for (field, value) in [
        ("delay_id", json!("")),
        ("delay_timeout", json!(0)),
        ("delay_timeout", json!(-5)),
    ] {
        let mut body = delayed(alice());
        body[field] = value;
        check_error(
            delegate(&service, body),
            400,
            "M_BAD_JSON",
            "`delay_id` or `delay_timeout`",
        );
    }
    let mut body = delayed(alice());
    body["delay_timeout"] = json!("10000");
    check_error(delegate(&service, body), 400, "M_NOT_JSON", "");
    // Checked before the OpenID token, as every other body error.
    check_error(
        delegate(
            &service,
            msc4195("forged", "home.example", "@alice:home.example"),
        ),
        400,
        "M_BAD_JSON",
        "`delay_id` or `delay_timeout`",
    );
    check_error(
        delegate(
            &service,
            delayed(msc4195("forged", "home.example", "@alice:home.example")),
        ),
        401,
        "M_UNAUTHORIZED",
        "",
    );
    check_error(
        delegate(
            &service,
            delayed(msc4195(
                "alice-token",
                "home.example",
                "@mallory:home.example",
            )),
        ),
        401,
        "M_UNAUTHORIZED",
        "",
    );
    // Not full access: 403 here (the token endpoints say 400).
    check_error(
        delegate(
            &service,
            delayed(msc4195(
                "bob-token",
                "remote.example",
                "@bob:remote.example",
            )),
        ),
        403,
        "M_FORBIDDEN",
        "only supported for full access users",
    );
    assert!(delegations.accepted.lock().unwrap().is_empty());

    // A good request is delegated for the /get_token identity, and creates no room.
    delegate(&service, delayed(alice())).unwrap();
    let accepted = delegations.accepted.lock().unwrap();
    assert_eq!(accepted.len(), 1);
    assert_eq!(
        accepted[0].identity,
        derive::rtc_identity("@alice:home.example", "DEV", "member1")
    );
    assert_eq!(
        accepted[0].room,
        derive::room_alias("!room:home.example", "m.call#ROOM")
    );
    assert!(rooms.lock().unwrap().is_empty());
}

#[test]
fn delegation_failures_have_lk_jwt_service_codes() {
    let (service, _, _, delegations) = service_with_all();
    let alice = || {
        delayed(msc4195(
            "alice-token",
            "home.example",
            "@alice:home.example",
        ))
    };
    type Case = (fn() -> DelegationError, u16, &'static str, &'static str);
    let cases: [Case; 3] = [
        (
            || DelegationError::Unresolvable("no".into()),
            400,
            "M_BAD_JSON",
            "Unable to resolve client-server API",
        ),
        (
            || DelegationError::ShuttingDown,
            503,
            "M_UNKNOWN",
            "Service is shutting down",
        ),
        (
            || DelegationError::Storage("disk full".into()),
            500,
            "M_UNKNOWN",
            "Internal Server Error",
        ),
    ];
    for (refusal, status, errcode, text) in cases {
        *delegations.refuse.lock().unwrap() = Some(refusal);
        check_error(delegate(&service, alice()), status, errcode, text);
        // The token endpoints refuse the same way (and issue no token).
        check_error(
            run(service.get_token(alice().to_string().as_bytes())),
            status,
            errcode,
            text,
        );
    }
}

#[test]
fn restricted_users_join_only_rooms_that_exist_and_never_create_them() {
    let (service, _, rooms) = service_with_rooms();
    let bob = || msc4195("bob-token", "remote.example", "@bob:remote.example");
    check_error(
        run(service.get_token(bob().to_string().as_bytes())),
        403,
        "M_FORBIDDEN",
        "not been started",
    );
    assert!(
        rooms.lock().unwrap().is_empty(),
        "a restricted user must not create the room"
    );

    // Delegation is for full-access users only.
    let mut delayed = bob();
    delayed["delay_id"] = json!("syd_2");
    delayed["delay_timeout"] = json!(10000);
    check_error(
        run(service.get_token(delayed.to_string().as_bytes())),
        400,
        "M_BAD_JSON",
        "full access users",
    );

    // Once a full-access user has started the call, the restricted user gets a token for it.
    run(service.sfu_get(legacy("alice-token", "home.example").to_string().as_bytes())).unwrap();
    assert_eq!(rooms.lock().unwrap().len(), 1);
    let response = run(service.get_token(bob().to_string().as_bytes())).unwrap();
    assert_eq!(
        claims(&response).video.unwrap().room,
        derive::room_alias("!room:home.example", "m.call#ROOM")
    );
}

#[test]
fn only_full_access_homeservers_may_be_on_private_addresses() {
    let (service, canned) = service();
    let _ = run(service.sfu_get(legacy("alice-token", "home.example").to_string().as_bytes()));
    let _ = run(service.sfu_get(legacy("bob-token", "remote.example").to_string().as_bytes()));
    assert_eq!(
        *canned.policies.lock().unwrap(),
        [
            ("home.example".to_owned(), AddressPolicy::AllowPrivate),
            ("remote.example".to_owned(), AddressPolicy::PublicOnly)
        ]
    );
}

#[test]
fn a_new_public_url_and_full_access_list_apply_to_the_next_request() {
    let (service, _, rooms) = service_with_rooms();
    let bob = || msc4195("bob-token", "remote.example", "@bob:remote.example");
    check_error(
        run(service.get_token(bob().to_string().as_bytes())),
        403,
        "M_FORBIDDEN",
        "not been started",
    );
    // The admin panel names bob's homeserver and moves the SFU, without a restart.
    service.set_live(
        PublicUrl::parse("wss://calls.example.net/livekit/sfu").unwrap(),
        FullAccess::parse("home.example,remote.example").unwrap(),
    );
    let response = run(service.get_token(bob().to_string().as_bytes())).unwrap();
    assert_eq!(response.url, "wss://calls.example.net/livekit/sfu");
    assert_eq!(
        rooms.lock().unwrap().len(),
        1,
        "a full-access user creates the room"
    );
    assert_eq!(
        service.public_url().as_str(),
        "wss://calls.example.net/livekit/sfu"
    );
}
