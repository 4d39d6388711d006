"""Verifies gatehouse access tokens with PyJWT, a verifier gatehouse did not write.

Reads a JSON object from stdin: {"issuer": URL, "audience": str, "tokens": {name: token}}.
Finds the keys as an integrator's service would: the issuer's
/.well-known/openid-configuration names the jwks_uri, which PyJWKClient reads.
Prints a JSON object: {"jwks_kids": [...], "results": {name: {"ok": bool,
"kid": str, "sub": str, "error": str}}}.

Exits 3 when PyJWT (with its crypto extra) is not installed.
"""

import json
import sys
import urllib.request

try:
    import jwt
    from jwt import PyJWKClient
    import cryptography  # noqa: F401  (ES256 and EdDSA need it)
except ImportError as error:
    print(f"PyJWT with crypto is not installed ({error}): pip install 'pyjwt[crypto]'", file=sys.stderr)
    sys.exit(3)


def main():
    request = json.load(sys.stdin)
    issuer = request["issuer"]
    with urllib.request.urlopen(issuer + "/.well-known/openid-configuration") as response:
        config = json.load(response)
    assert config["issuer"] == issuer, f"issuer {config['issuer']!r} != {issuer!r}"
    # A fresh client per run: no cache carried between the test's steps.
    client = PyJWKClient(config["jwks_uri"], cache_keys=False, cache_jwk_set=False)
    with urllib.request.urlopen(config["jwks_uri"]) as response:
        jwks_kids = [key["kid"] for key in json.load(response)["keys"]]
    results = {}
    for name, token in request["tokens"].items():
        result = {"ok": False, "kid": "", "sub": "", "error": ""}
        try:
            header = jwt.get_unverified_header(token)
            result["kid"] = header.get("kid", "")
            if header.get("typ") != "at+jwt":
                raise ValueError(f"typ {header.get('typ')!r} is not at+jwt")
            key = client.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["ES256", "EdDSA"],
                audience=request["audience"],
                issuer=issuer,
                options={"require": ["exp", "iat", "nbf", "sub", "iss", "aud"]},
            )
            result["ok"] = True
            result["sub"] = claims["sub"]
        except Exception as error:  # noqa: BLE001  (every refusal is reported)
            result["error"] = f"{type(error).__name__}: {error}"
        results[name] = result
    print(json.dumps({"jwks_kids": jwks_kids, "results": results}))


if __name__ == "__main__":
    main()
