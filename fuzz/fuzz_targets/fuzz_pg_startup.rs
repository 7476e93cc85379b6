//! The PostgreSQL startup path, as the server's PostgreSQL gateway and the
//! connector read it (`infra-proto-pg`): the startup packet, the password
//! message, then any message frames, with every body parser the audit
//! uses. Bytes arrive in chunks of a size the input picks, the way the
//! gateway's read loop (`pg_gateway::serve`) sees them.
//!
//! Asserts: no panic, no allocation of what a length field claims; a
//! prefix of a packet parses as "need more" or exactly as the whole does
//! (chunking changes nothing); packet and frame lengths stay in their
//! bounds; a startup message re-encoded for the connector is byte for
//! byte what the client sent; bodies parse to no more values than their
//! bytes can hold; the error the gateway answers with frames correctly
//! and reads back as what it said.
#![no_main]

use infra_proto_pg::{
    MAX_MESSAGE, MAX_STARTUP, Startup, bind, close_target, command_tag, error_fields, error_response, execute_portal,
    frame, function_call, parse_message, parse_startup, password, query_bytes, startup_message,
};
use libfuzzer_sys::fuzz_target;

/// What the gateway answers a client with: a well-formed ErrorResponse
/// that reads back as the message it was given.
fn check_error_reply(msg: &str) {
    let e = error_response("FATAL", "08P01", msg);
    assert_eq!(frame(&e, MAX_MESSAGE), Ok(Some((b'E', e.len()))));
    let (code, m) = error_fields(&e[5..]);
    assert_eq!(code, "08P01");
    assert_eq!(m, msg.replace('\0', " "));
}

/// Reads the startup packet the way the gateway does: grow the buffer by
/// one chunk at a time until the parser has an answer.
fn startup_in_chunks(data: &[u8], chunk: usize) -> Option<usize> {
    let whole = parse_startup(data);
    let mut have = 0;
    loop {
        let r = parse_startup(&data[..have]);
        match &r {
            Ok(None) if have < data.len() => {
                have = (have + chunk).min(data.len());
                continue;
            }
            Ok(None) => {
                assert_eq!(r, whole);
                return None;
            }
            _ => {}
        }
        // A prefix that is enough to decide decides as the whole does.
        assert_eq!(r, whole, "chunking changed the outcome");
        return match r {
            Ok(Some((packet, n))) => {
                assert!((8..=MAX_STARTUP).contains(&n) && n <= data.len());
                match packet {
                    Startup::Ssl | Startup::GssEnc => assert_eq!(n, 8),
                    Startup::Cancel { .. } => assert_eq!(n, 16),
                    Startup::Startup { params } => {
                        assert!(params.len() <= 64);
                        let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                        for (k, v) in &pairs {
                            assert!(!k.is_empty() && !k.contains('\0') && !v.contains('\0'));
                        }
                        // The gateway sends the connector a fresh startup
                        // message built from what it parsed.
                        assert_eq!(startup_message(&pairs), &data[..n], "re-encoded startup differs");
                    }
                }
                Some(n)
            }
            Err(e) => {
                check_error_reply(&e.to_string());
                None
            }
            Ok(None) => None,
        };
    }
}

/// One message frame and every body parser on its body.
fn check_frame(buf: &[u8], max: usize) -> Option<usize> {
    match frame(buf, max) {
        Ok(Some((tag, n))) => {
            assert!(n >= 5 && n <= buf.len() && n <= max + 1);
            let body = &buf[5..n];
            // Query text as bytes, in whatever encoding: never longer than
            // the body, and up to its first NUL.
            let q = query_bytes(body);
            assert!(q.len() <= body.len() && !q.contains(&0));
            if let Ok((name, q)) = parse_message(body) {
                assert!(name.len() + q.len() + 2 <= body.len());
            }
            if let Ok(f) = function_call(body) {
                let arg_bytes: usize = f.args.iter().map(|a| a.map_or(0, <[u8]>::len)).sum();
                assert!(4 + arg_bytes + 4 * f.args.len() <= body.len());
            }
            if let Some((_, name)) = close_target(body) {
                assert!(name.len() + 2 <= body.len());
            }
            if let Ok((portal, statement, params)) = bind(body) {
                assert!(portal.len() + statement.len() + 6 + 4 * params.len() <= body.len());
            }
            if let Ok(p) = password(body) {
                assert!(!p.contains('\0'));
                // The gateway puts the password in an Authorization header
                // and leaves it out when it cannot be one.
                let _ = http::HeaderValue::from_str(&format!("Bearer {p}"));
            }
            let _ = (execute_portal(body), command_tag(body), tag);
            let (code, message) = error_fields(body);
            assert!(code.len() + message.len() <= body.len());
            Some(n)
        }
        Ok(None) => None,
        Err(e) => {
            check_error_reply(&e.to_string());
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&c, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(c % 32) + 1;
    let mut at = match startup_in_chunks(data, chunk) {
        Some(n) => n,
        None if c & 0x80 != 0 => 0,
        None => return,
    };
    // After the startup message the gateway expects the password within
    // MAX_STARTUP; the connector reads frames up to MAX_MESSAGE.
    if let Some(n) = check_frame(&data[at..], MAX_STARTUP) {
        at += n;
    }
    while let Some(n) = check_frame(&data[at..], MAX_MESSAGE) {
        at += n;
    }
});
