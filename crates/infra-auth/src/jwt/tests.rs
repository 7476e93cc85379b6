//! Attacks on token verification: each must be refused.

use super::*;

const ISS: &str = "https://infra.test";

fn now() -> i64 {
    i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap()
}

fn claims(aud: &str, exp_in: i64, nbf_in: i64) -> Claims {
    let n = now();
    Claims {
        iss: ISS.into(),
        sub: "u1".into(),
        aud: aud.into(),
        exp: n + exp_in,
        iat: n,
        nbf: n + nbf_in,
        jti: "j1".into(),
        name: "alice@example.com".into(),
        email: Some("alice@example.com".into()),
        groups: vec!["devs".into()],
        sid: None,
        act: None,
    }
}

fn setup() -> (SigningKey, Verifier) {
    let k = SigningKey::generate().unwrap();
    let v = Verifier::new(&Jwks { keys: vec![k.jwk()] }, ISS);
    (k, v)
}

#[test]
fn valid_token_verifies() {
    let (k, v) = setup();
    let t = k.sign(&claims("prod", 300, 0)).unwrap();
    let c = v.verify(&t, "prod").unwrap();
    assert_eq!(c.name, "alice@example.com");
    assert_eq!(c.groups, ["devs"]);
}

#[test]
fn wrong_audience() {
    let (k, v) = setup();
    let t = k.sign(&claims("prod", 300, 0)).unwrap();
    assert_eq!(v.verify(&t, "staging"), Err(VerifyError::Audience));
}

#[test]
fn expired_and_not_yet_valid() {
    let (k, v) = setup();
    let t = k.sign(&claims("prod", -120, -300)).unwrap();
    assert_eq!(v.verify(&t, "prod"), Err(VerifyError::Expired));
    let t = k.sign(&claims("prod", 600, 120)).unwrap();
    assert_eq!(v.verify(&t, "prod"), Err(VerifyError::NotYetValid));
}

#[test]
fn wrong_key_and_unknown_kid() {
    let (_, v) = setup();
    let other = SigningKey::generate().unwrap();
    let t = other.sign(&claims("prod", 300, 0)).unwrap();
    assert_eq!(v.verify(&t, "prod"), Err(VerifyError::UnknownKey));
    // Same kid as a trusted key, different private key.
    let (k, v) = setup();
    let mut forged = SigningKey::generate().unwrap();
    forged.kid = k.kid.clone();
    let t = forged.sign(&claims("prod", 300, 0)).unwrap();
    assert_eq!(v.verify(&t, "prod"), Err(VerifyError::Signature));
}

#[test]
fn tampered_payload() {
    let (k, v) = setup();
    let t = k.sign(&claims("prod", 300, 0)).unwrap();
    let parts: Vec<&str> = t.split('.').collect();
    let mut c = claims("prod", 300, 0);
    c.name = "root@example.com".into();
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
    let forged = format!("{}.{}.{}", parts[0], payload, parts[2]);
    assert_eq!(v.verify(&forged, "prod"), Err(VerifyError::Signature));
}

#[test]
fn alg_none_and_hmac_confusion() {
    let (k, v) = setup();
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims("prod", 300, 0)).unwrap());
    let none_header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","kid":"{}"}}"#, k.kid));
    assert!(v.verify(&format!("{none_header}.{payload}."), "prod").is_err());
    // HS256 signed with the public key as the secret (key confusion).
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some(k.kid.clone());
    let t = jsonwebtoken::encode(
        &h,
        &claims("prod", 300, 0),
        &EncodingKey::from_secret(k.public_x.as_bytes()),
    )
    .unwrap();
    assert_eq!(v.verify(&t, "prod"), Err(VerifyError::Algorithm));
}

#[test]
fn wrong_issuer_and_garbage() {
    let (k, _) = setup();
    let v = Verifier::new(&Jwks { keys: vec![k.jwk()] }, "https://evil.test");
    let t = k.sign(&claims("prod", 300, 0)).unwrap();
    assert_eq!(v.verify(&t, "prod"), Err(VerifyError::Issuer));
    for junk in ["", "a.b", "a.b.c", "....", "\u{0}"] {
        assert!(v.verify(junk, "prod").is_err(), "{junk:?}");
    }
}

#[test]
fn rotated_keys_both_verify() {
    let old = SigningKey::generate().unwrap();
    let new = SigningKey::generate().unwrap();
    let v = Verifier::new(
        &Jwks {
            keys: vec![new.jwk(), old.jwk()],
        },
        ISS,
    );
    for k in [&old, &new] {
        assert!(v.verify(&k.sign(&claims("prod", 300, 0)).unwrap(), "prod").is_ok());
    }
    let reloaded = SigningKey::from_pkcs8(old.pkcs8().to_vec()).unwrap();
    assert_eq!(reloaded.kid, old.kid);
}

#[test]
fn cache_never_widens_what_a_token_opens() {
    let (k, v) = setup();
    let cv = CachingVerifier::new(v, 2);
    let t = k.sign(&claims("prod", 300, 0)).unwrap();
    assert!(cv.verify(&t, "prod").is_ok());
    assert!(cv.verify(&t, "prod").is_ok(), "cached");
    assert_eq!(
        cv.verify(&t, "staging"),
        Err(VerifyError::Audience),
        "a hit for another audience still fails"
    );
    let expired = k.sign(&claims("prod", -120, -300)).unwrap();
    assert_eq!(cv.verify(&expired, "prod"), Err(VerifyError::Expired));
    for i in 0..5 {
        let mut c = claims("prod", 300, 0);
        c.jti = format!("j{i}");
        assert!(cv.verify(&k.sign(&c).unwrap(), "prod").is_ok());
    }
    let forged = format!("{t}x");
    assert!(
        cv.verify(&forged, "prod").is_err(),
        "a different string is verified in full"
    );
}

#[test]
fn kid_is_derived_from_the_public_key() {
    let k = SigningKey::generate().unwrap();
    assert_eq!(ed25519_kid(&k.jwk().x).as_deref(), Some(k.kid.as_str()));
    let other = SigningKey::generate().unwrap();
    assert_ne!(ed25519_kid(&other.jwk().x).as_deref(), Some(k.kid.as_str()));
    for bad in ["", "not base64!", "AAAA"] {
        assert_eq!(ed25519_kid(bad), None, "{bad:?}");
    }
}
