#!/usr/bin/env python3
"""Verify an Infra credential (JWT) the way a third party would: with PyJWT.

    python3 tests/jwt_verify.py (--jwks-url URL --ca FILE | --jwks-file FILE) \
        --issuer ISS --audience AUD TOKEN

Fetches the JWKS (over HTTPS, trusting only the CA in FILE, or from a local
file), picks the key named by the token header's `kid`, and verifies the token
with algorithm EdDSA only, the given audience and issuer, requiring
exp, iat, nbf, iss, sub, aud and jti.

Exit status and output:
  0  verified: the decoded claims as JSON on stdout
  1  rejected: `REJECTED: <reason>` on stdout
  2  could not check at all (bad usage, JWKS unreachable or malformed,
     PyJWT missing): `ERROR: <reason>` on stderr. A test expecting a rejection
     must check for exit status 1, so a broken setup never passes as one.
"""

import argparse
import json
import os
import ssl
import sys
import urllib.request

REQUIRED_CLAIMS = ["exp", "iat", "nbf", "iss", "sub", "aud", "jti"]
# Debian's python3-jwt lives in the system interpreter; a pyenv or venv
# python3 first on PATH may not have it.
SYSTEM_PYTHON = "/usr/bin/python3"
REEXEC_GUARD = "JWT_VERIFY_REEXECED"


def error(msg):
    print(f"ERROR: {msg}", file=sys.stderr)
    sys.exit(2)


def reject(msg):
    print(f"REJECTED: {msg}")
    sys.exit(1)


def import_jwt():
    try:
        import jwt  # noqa: F401

        return jwt
    except ImportError as e:
        here = os.path.realpath(sys.executable or "")
        if (
            os.environ.get(REEXEC_GUARD) != "1"
            and os.path.exists(SYSTEM_PYTHON)
            and here != os.path.realpath(SYSTEM_PYTHON)
        ):
            os.environ[REEXEC_GUARD] = "1"
            os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON, os.path.abspath(__file__), *sys.argv[1:]])
        error(f"PyJWT is not installed for {sys.executable} ({e}); run scripts/test to install it")


def load_jwks(args):
    try:
        if args.jwks_file:
            with open(args.jwks_file, "rb") as f:
                raw = f.read()
        else:
            if not args.ca:
                error("--ca is required with --jwks-url")
            ctx = ssl.create_default_context(cafile=args.ca)
            with urllib.request.urlopen(args.jwks_url, context=ctx, timeout=30) as resp:
                if resp.status != 200:
                    error(f"GET {args.jwks_url}: status {resp.status}")
                raw = resp.read()
    except (OSError, ValueError, ssl.SSLError) as e:
        error(f"cannot load the JWKS: {e}")
    try:
        jwks = json.loads(raw)
    except ValueError as e:
        error(f"the JWKS is not JSON: {e}")
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        error("the JWKS has no 'keys' list")
    return jwks


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--jwks-url", help="HTTPS URL of the JWKS")
    src.add_argument("--jwks-file", help="a local JWKS file instead of --jwks-url")
    p.add_argument("--ca", help="PEM CA file to trust for --jwks-url")
    p.add_argument("--issuer", required=True)
    p.add_argument("--audience", required=True)
    p.add_argument("--leeway", type=float, default=0, help="clock skew allowed, in seconds (default 0)")
    p.add_argument("token")
    args = p.parse_args()

    jwt = import_jwt()
    jwks = load_jwks(args)

    try:
        header = jwt.get_unverified_header(args.token)
    except jwt.PyJWTError as e:
        reject(f"malformed token: {e}")
    kid = header.get("kid")
    if not kid:
        reject("token header has no kid")
    if header.get("alg") != "EdDSA":
        reject(f"token header alg is {header.get('alg')!r}, not EdDSA")
    matches = [k for k in jwks["keys"] if isinstance(k, dict) and k.get("kid") == kid]
    if not matches:
        reject(f"no key with kid {kid!r} in the JWKS")
    try:
        key = jwt.PyJWK(matches[0])
    except jwt.PyJWTError as e:
        error(f"the JWKS key {kid!r} is not usable: {e}")

    try:
        claims = jwt.decode(
            args.token,
            key.key,
            algorithms=["EdDSA"],
            audience=args.audience,
            issuer=args.issuer,
            leeway=args.leeway,
            options={"require": REQUIRED_CLAIMS, "verify_signature": True},
        )
    except jwt.PyJWTError as e:
        reject(f"{type(e).__name__}: {e}")

    print(json.dumps(claims, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
