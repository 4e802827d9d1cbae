"""The authorization service against a real Synapse: OpenID tokens from Synapse are checked by
federation discovery + /openid/userinfo over verified TLS, and exchanged for LiveKit tokens."""

import base64
import hashlib
import json

import jwt
import pytest

DEVICE = "DEVICEID"
SLOT = "m.call#ROOM"
ROOM = "!tDLCaLXijNtYcJZEey:example.com"


def unpadded_sha256_b64(parts) -> str:
    """What matrix-js-sdk computes: JSON.stringify, SHA-256, unpadded standard base64."""
    compact = json.dumps(parts, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.b64encode(hashlib.sha256(compact).digest()).decode().rstrip("=")


def verify(box, token: str) -> dict:
    stored = box.stored()
    return jwt.decode(token, stored["api_secret"], algorithms=["HS256"], issuer=stored["api_key"],
                      options={"require": ["exp", "iss", "sub", "nbf"]})


@pytest.fixture(scope="module")
def alice(synapse):
    return synapse.register("alice")


def legacy_body(openid: dict) -> dict:
    return {"room": ROOM, "openid_token": openid, "device_id": DEVICE}


def msc4195_body(openid: dict, user_id: str) -> dict:
    return {"room_id": ROOM, "slot_id": SLOT, "openid_token": openid,
            "member": {"id": "member-uuid-1", "claimed_user_id": user_id, "claimed_device_id": DEVICE}}


def test_synapse_user_gets_livekit_tokens_on_both_endpoints(synapse, alice, start_rtcbox):
    box = start_rtcbox({"RTCBOX_FULL_ACCESS_HOMESERVERS": synapse.server_name})
    expected_room = unpadded_sha256_b64([ROOM, SLOT])

    openid = synapse.openid_token(alice)
    assert set(openid) >= {"access_token", "token_type", "matrix_server_name", "expires_in"}
    response = box.post("/sfu/get", legacy_body(openid))
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == "*"
    body = response.json()
    assert body["url"] == box.public_url
    claims = verify(box, body["jwt"])
    assert claims["sub"] == f"{alice['user_id']}:{DEVICE}"
    assert claims["exp"] - claims["nbf"] == 3600
    assert claims["video"] == {"roomJoin": True, "room": expected_room, "canPublish": True,
                               "canSubscribe": True, "canUpdateOwnMetadata": True}

    # /get_token, through the public prefix a reverse proxy may leave in place.
    response = box.post("/livekit/jwt/get_token", msc4195_body(synapse.openid_token(alice), alice["user_id"]))
    assert response.status_code == 200, response.text
    claims = verify(box, response.json()["jwt"])
    assert claims["sub"] == unpadded_sha256_b64([alice["user_id"], DEVICE, "member-uuid-1"])
    assert claims["video"]["room"] == expected_room, "both endpoints must land in the same room"

    # OpenID tokens are reusable until they expire, as with lk-jwt-service.
    assert box.post("/sfu/get", legacy_body(openid)).status_code == 200

    log = box.log_text()
    assert "room created" in log
    assert box.stored()["api_secret"] not in log, "the API secret must never be logged"
    assert openid["access_token"] not in log, "OpenID access tokens must never be logged"


def test_forged_token_is_unauthorized(synapse, alice, start_rtcbox):
    box = start_rtcbox({"RTCBOX_FULL_ACCESS_HOMESERVERS": synapse.server_name})
    forged = dict(synapse.openid_token(alice), access_token="forgedforgedforgedforged")
    for path, body in [("/sfu/get", legacy_body(forged)),
                       ("/get_token", msc4195_body(forged, alice["user_id"]))]:
        response = box.post(path, body)
        assert response.status_code == 401, response.text
        assert response.json() == {"errcode": "M_UNAUTHORIZED",
                                   "error": "The request could not be authorised."}
    # Synapse itself said no: the lookup reached it and got 401.
    assert "answered HTTP 401" in box.log_text()


def test_claimed_user_must_be_the_token_owner(synapse, alice, start_rtcbox):
    box = start_rtcbox({"RTCBOX_FULL_ACCESS_HOMESERVERS": synapse.server_name})
    mallory = synapse.register("mallory")
    body = msc4195_body(synapse.openid_token(mallory), alice["user_id"])
    response = box.post("/get_token", body)
    assert response.status_code == 401
    assert response.json()["errcode"] == "M_UNAUTHORIZED"


def test_mismatched_matrix_server_name_is_unauthorized(synapse, alice, start_rtcbox):
    # The same Synapse, reached by its IP: it confirms the token, but the user is
    # @alice:localhost:PORT, not a user of 127.0.0.1:PORT.
    other_name = f"127.0.0.1:{synapse.federation_port}"
    box = start_rtcbox({"RTCBOX_FULL_ACCESS_HOMESERVERS": f"{synapse.server_name},{other_name}"})
    openid = dict(synapse.openid_token(alice), matrix_server_name=other_name)
    response = box.post("/sfu/get", legacy_body(openid))
    assert response.status_code == 401, response.text
    assert response.json()["errcode"] == "M_UNAUTHORIZED"
    assert f"not to a user of '{other_name}'" in box.log_text()


def test_malformed_requests_get_400(synapse, alice, start_rtcbox):
    box = start_rtcbox({"RTCBOX_FULL_ACCESS_HOMESERVERS": synapse.server_name})
    for path in ("/sfu/get", "/get_token"):
        response = box.post(path, "{not json")
        assert response.status_code == 400
        assert response.json() == {"errcode": "M_NOT_JSON", "error": "Error reading request"}
    response = box.post("/sfu/get", {"openid_token": synapse.openid_token(alice), "device_id": DEVICE})
    assert response.status_code == 400
    assert response.json() == {"errcode": "M_BAD_JSON", "error": "Missing room parameter"}


def test_non_full_access_homeserver_cannot_create_a_room(synapse, alice, start_rtcbox):
    # Synapse is on loopback, so only the dangerous override lets a non-full-access lookup reach it.
    box = start_rtcbox({"RTCBOX_FULL_ACCESS_HOMESERVERS": "other.example",
                        "RTCBOX_DANGEROUS_ALLOW_PRIVATE_HOMESERVERS": "true"})
    for path, body in [("/sfu/get", legacy_body(synapse.openid_token(alice))),
                       ("/get_token", msc4195_body(synapse.openid_token(alice), alice["user_id"]))]:
        response = box.post(path, body)
        assert response.status_code == 403, response.text
        assert response.json()["errcode"] == "M_FORBIDDEN"
    log = box.log_text()
    assert "room not started by a full-access user" in log
    assert "room created" not in log


def test_homeserver_on_a_private_address_is_refused_unless_full_access(synapse, alice, start_rtcbox):
    box = start_rtcbox({"RTCBOX_FULL_ACCESS_HOMESERVERS": "other.example"})
    response = box.post("/sfu/get", legacy_body(synapse.openid_token(alice)))
    assert response.status_code == 401
    assert "non-public address" in box.log_text()


def test_lk_jwt_service_environment_works_unchanged(synapse, alice, start_rtcbox, tmp_path):
    secret = "lk-jwt-service-secret-0123456789abcdef"
    keyfile = tmp_path / "keys"
    keyfile.write_text(f"lkkey: {secret}\n")
    box = start_rtcbox({"LIVEKIT_URL": "wss://sfu.example.org/livekit/sfu",
                        "LIVEKIT_KEY_FILE": str(keyfile),
                        "LIVEKIT_FULL_ACCESS_HOMESERVERS": synapse.server_name})
    response = box.post("/sfu/get", legacy_body(synapse.openid_token(alice)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["url"] == "wss://sfu.example.org/livekit/sfu"
    claims = jwt.decode(body["jwt"], secret, algorithms=["HS256"], issuer="lkkey")
    assert claims["sub"] == f"{alice['user_id']}:{DEVICE}"
