"""keyward's OAuth 2.0 endpoints driven by third-party client libraries:
authlib's OAuth 2 client (RFC 6749 grants, RFC 7523 client_secret_jwt,
RFC 7662 introspection, RFC 7009 revocation, RFC 8414 metadata) and PyJWT's
JWKS client, which verifies access tokens offline against
/.well-known/jwks.json.

Run by crates/keyward/tests/api/oauth_clients.rs, which starts keyward and
sets KEYWARD_URL, CLIENT_ID, CLIENT_SECRET (a client key), JWT_CLIENT_ID,
JWT_CLIENT_SECRET (a recoverable one), TOKEN_FILE and PHASE: `before` a
signing-key rotation (every flow; leaves an access token in TOKEN_FILE) or
`after` it (the old token and a new one both verify through the JWKS).
Prints one line per check; exits 1 at the first failure.
"""

import json
import os
import sys

# The test server speaks plain HTTP on loopback.
os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")

import jwt  # noqa: E402
import requests  # noqa: E402
from authlib.integrations.requests_client import OAuth2Session, OAuthError  # noqa: E402
from authlib.oauth2.rfc7523 import ClientSecretJWT  # noqa: E402
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata  # noqa: E402

BASE = os.environ["KEYWARD_URL"]
CLIENT_ID = os.environ["CLIENT_ID"]
CLIENT_SECRET = os.environ["CLIENT_SECRET"]


def check(condition, what):
    if not condition:
        print(f"FAIL {what}")
        sys.exit(1)
    print(f"ok   {what}")


# The metadata document, read and checked by authlib's RFC 8414 model (its
# https-only checks aside: the test server is plain HTTP on loopback).
meta = AuthorizationServerMetadata(requests.get(f"{BASE}/.well-known/oauth-authorization-server").json())
for validator in (
    "validate_response_types_supported",
    "validate_grant_types_supported",
    "validate_token_endpoint_auth_methods_supported",
    "validate_token_endpoint_auth_signing_alg_values_supported",
    "validate_introspection_endpoint_auth_methods_supported",
    "validate_revocation_endpoint_auth_methods_supported",
    "validate_authorization_endpoint",
):
    getattr(meta, validator)()
check(meta["issuer"] == BASE, "metadata: issuer is the server")
check("client_credentials" in meta.grant_types_supported, "metadata: client_credentials supported")
TOKEN_URL = meta["token_endpoint"]
jwks = jwt.PyJWKClient(meta["jwks_uri"])


def verify(access_token):
    """Verifies an access token offline: signature by a JWKS key, exp, iss, aud."""
    signing_key = jwks.get_signing_key_from_jwt(access_token)
    return jwt.decode(
        access_token,
        signing_key.key,
        algorithms=["EdDSA", "ES256"],
        audience=BASE,
        issuer=BASE,
        options={"require": ["exp", "iat", "iss", "sub", "aud", "jti"]},
    )


def session(method):
    return OAuth2Session(CLIENT_ID, CLIENT_SECRET, token_endpoint_auth_method=method, scope="campaigns:read")


phase = os.environ["PHASE"]
if phase == "before":
    for method in ("client_secret_basic", "client_secret_post"):
        s = session(method)
        token = s.fetch_token(TOKEN_URL, grant_type="client_credentials")
        check(token["token_type"] == "Bearer" and token["scope"] == "campaigns:read", f"{method}: token obtained")
        claims = verify(token["access_token"])
        check(claims["client_id"] == CLIENT_ID and claims["scope"] == "campaigns:read", f"{method}: PyJWT verifies it")

        refreshed = s.refresh_token(TOKEN_URL, refresh_token=token["refresh_token"])
        check(refreshed["refresh_token"] != token["refresh_token"], f"{method}: refreshed, the refresh token rotated")
        verify(refreshed["access_token"])
        try:
            s.refresh_token(TOKEN_URL, refresh_token=token["refresh_token"])
            check(False, f"{method}: a rotated refresh token is refused")
        except OAuthError as e:
            check(e.error == "invalid_grant", f"{method}: a rotated refresh token is refused ({e.error})")

        url = meta["introspection_endpoint"]
        second = s.fetch_token(TOKEN_URL, grant_type="client_credentials")
        info = s.introspect_token(url, token=second["access_token"]).json()
        check(info["active"] is True and info["client_id"] == CLIENT_ID, f"{method}: introspection says active")
        info = s.introspect_token(url, token=second["refresh_token"], token_type_hint="refresh_token").json()
        check(info["active"] is True and info["token_type"] == "refresh_token", f"{method}: refresh token active")
        revoked = s.revoke_token(meta["revocation_endpoint"], token=second["access_token"])
        check(revoked.status_code == 200, f"{method}: revoked")
        info = s.introspect_token(url, token=second["access_token"]).json()
        check(info == {"active": False}, f"{method}: revoked token inactive")
        s.revoke_token(meta["revocation_endpoint"], token=second["refresh_token"], token_type_hint="refresh_token")
        try:
            s.refresh_token(TOKEN_URL, refresh_token=second["refresh_token"])
            check(False, f"{method}: a revoked refresh token is refused")
        except OAuthError as e:
            check(e.error == "invalid_grant", f"{method}: a revoked refresh token is refused")

    # A wrong secret: authlib sees RFC 6749's invalid_client.
    try:
        OAuth2Session(CLIENT_ID, "kwcs_live_wrong").fetch_token(TOKEN_URL, grant_type="client_credentials")
        check(False, "wrong secret refused")
    except OAuthError as e:
        check(e.error == "invalid_client", "wrong secret refused (invalid_client)")

    # RFC 7523: authlib signs the client assertion with the secret.
    jwt_id, jwt_secret = os.environ["JWT_CLIENT_ID"], os.environ["JWT_CLIENT_SECRET"]
    s = OAuth2Session(jwt_id, jwt_secret, token_endpoint_auth_method=ClientSecretJWT(TOKEN_URL))
    token = s.fetch_token(TOKEN_URL, grant_type="client_credentials")
    check(verify(token["access_token"])["client_id"] == jwt_id, "client_secret_jwt: token obtained and verified")

    token = session("client_secret_basic").fetch_token(TOKEN_URL, grant_type="client_credentials")
    with open(os.environ["TOKEN_FILE"], "w") as f:
        json.dump({"access_token": token["access_token"], "kid": jwt.get_unverified_header(token["access_token"])["kid"]}, f)
elif phase == "after":
    with open(os.environ["TOKEN_FILE"]) as f:
        before = json.load(f)
    keys = requests.get(meta["jwks_uri"]).json()["keys"]
    check(len(keys) == 2, "JWKS: the new key and the retired one")
    verify(before["access_token"])
    check(True, "a token signed before the rotation still verifies")
    token = session("client_secret_basic").fetch_token(TOKEN_URL, grant_type="client_credentials")
    kid = jwt.get_unverified_header(token["access_token"])["kid"]
    check(kid != before["kid"], "a new token is signed by the new key")
    verify(token["access_token"])
    check(True, "the new token verifies through the JWKS")
    # A token whose signature does not match is refused by PyJWT too.
    head, body, sig = token["access_token"].split(".")
    try:
        verify(f"{head}.{body}.{before['access_token'].split('.')[2]}")
        check(False, "a forged token is refused")
    except jwt.InvalidSignatureError:
        check(True, "a forged token is refused")
else:
    check(False, f"unknown PHASE {phase}")
print("all checks passed")
