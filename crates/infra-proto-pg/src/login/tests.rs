//! The login machines on byte slices: every input is fed whole, then in
//! every chunk size down to byte by byte, and must end the same way.

use super::*;
use crate::{MAX_MESSAGE, PROTOCOL_3, cancel_request, error_fields, startup_message};

const SSL: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
const GSSENC: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];

/// How a run of a machine ended.
#[derive(Debug, PartialEq, Eq)]
enum End<T> {
    /// The input ran out while the machine wanted more.
    Starved,
    Cancel(CancelKey),
    Done(T),
    Failed(SqlState, String),
}

/// What a machine hands over when it is done, with the bytes it had
/// read past its end.
trait Leftover {
    fn leftover(&mut self) -> &mut Vec<u8>;
}

impl Leftover for Started {
    fn leftover(&mut self) -> &mut Vec<u8> {
        &mut self.leftover
    }
}

impl Leftover for Login {
    fn leftover(&mut self) -> &mut Vec<u8> {
        &mut self.leftover
    }
}

/// Feeds `input` in `chunk`-sized reads, as the driver would: it reads
/// only when the machine needs more. A TLS request is granted at once
/// (what follows is taken as arriving over TLS). Returns every byte
/// written and how the run ended; when done, the input not yet read is
/// added to the leftover, as the session would read it next.
fn run<H>(h: &mut H, input: &[u8], chunk: usize, tls: impl Fn(&mut H)) -> (Vec<u8>, End<H::Done>)
where
    H: Handshake,
    H::Done: Leftover,
{
    let mut written = Vec::new();
    let mut at = 0;
    loop {
        match h.step() {
            Step::NeedMore if at >= input.len() => return (written, End::Starved),
            Step::NeedMore => {
                let end = (at + chunk).min(input.len());
                h.receive(&input[at..end]);
                at = end;
            }
            Step::Write(b) => written.extend_from_slice(&b),
            Step::TlsRequested => tls(h),
            Step::Cancel(k) => return (written, End::Cancel(k)),
            Step::Done(mut d) => {
                d.leftover().extend_from_slice(&input[at..]);
                return (written, End::Done(d));
            }
            Step::Failed(f) => return (written, End::Failed(f.code, f.message)),
        }
    }
}

/// Runs a fresh machine over `input` in every chunk size: all runs must
/// agree, and the result is theirs.
fn check<H>(make: impl Fn() -> H, input: &[u8], tls: impl Fn(&mut H) + Copy) -> (Vec<u8>, End<H::Done>)
where
    H: Handshake,
    H::Done: Leftover + PartialEq + std::fmt::Debug,
{
    let whole = run(&mut make(), input, input.len().max(1), tls);
    for chunk in 1..input.len() {
        let r = run(&mut make(), input, chunk, tls);
        assert_eq!(r, whole, "chunks of {chunk} bytes");
    }
    whole
}

fn reader(t: Transport) -> impl Fn() -> StartupReader {
    move || StartupReader::new(t)
}

fn login(t: Transport) -> impl Fn() -> CleartextLogin {
    move || CleartextLogin::new(t)
}

fn reader_tls(r: &mut StartupReader) {
    r.tls_established();
}

fn login_tls(l: &mut CleartextLogin) {
    l.tls_established();
}

fn password_message(p: &[u8]) -> Vec<u8> {
    let mut m = vec![b'p'];
    m.extend_from_slice(&u32::try_from(p.len() + 5).unwrap().to_be_bytes());
    m.extend_from_slice(p);
    m.push(0);
    m
}

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

const QUERY: &[u8] = b"Q\0\0\0\x0dselect 1\0";

#[test]
fn tunnel_reads_the_startup_and_keeps_what_follows() {
    let input = [&startup_message(&[("user", "alice"), ("database", "app")])[..], QUERY].concat();
    let (written, end) = check(reader(Transport::Tunnel), &input, reader_tls);
    assert!(written.is_empty());
    let want = Started {
        params: params(&[("user", "alice"), ("database", "app")]),
        leftover: QUERY.to_vec(),
    };
    assert_eq!(end, End::Done(want));
}

#[test]
fn tunnel_declines_encryption_and_goes_on() {
    let input = [&GSSENC[..], &SSL, &startup_message(&[("user", "a")])].concat();
    let (written, end) = check(reader(Transport::Tunnel), &input, reader_tls);
    assert_eq!(written, b"NN");
    assert!(matches!(end, End::Done(Started { .. })), "{end:?}");
}

#[test]
fn cancels_end_the_handshake_in_every_transport() {
    for t in [Transport::Tunnel, Transport::Tls, Transport::TlsRequired] {
        let (written, end) = check(login(t), &cancel_request(42, -7), login_tls);
        assert!(written.is_empty());
        assert_eq!(end, End::Cancel(CancelKey { pid: 42, secret: -7 }), "{t:?}");
    }
    let shown = format!("{:?}", CancelKey { pid: 42, secret: 1234 });
    assert!(shown.contains("42") && !shown.contains("1234"), "{shown}");
}

#[test]
fn a_login_over_tls_asks_for_the_password() {
    let input = [
        &startup_message(&[("user", "alice")])[..],
        &password_message(b"tok.en"),
        QUERY,
    ]
    .concat();
    let (written, end) = check(login(Transport::Tls), &input, login_tls);
    assert_eq!(written, auth_cleartext());
    let want = Login {
        params: params(&[("user", "alice")]),
        password: Password("tok.en".into()),
        leftover: QUERY.to_vec(),
    };
    assert_eq!(end, End::Done(want));
}

/// GSSAPI declined, TLS granted; each answer awaited, as clients do.
fn past_tls() -> CleartextLogin {
    let mut l = CleartextLogin::new(Transport::TlsRequired);
    l.receive(&GSSENC);
    assert_eq!(l.step(), Step::Write(b"N".to_vec()));
    assert_eq!(l.step(), Step::NeedMore);
    l.receive(&SSL);
    assert_eq!(l.step(), Step::Write(b"S".to_vec()));
    assert_eq!(l.step(), Step::TlsRequested);
    l.tls_established();
    l
}

#[test]
fn tls_required_grants_tls_then_logs_in() {
    let input = [&startup_message(&[("user", "alice")])[..], &password_message(b"t")].concat();
    let (written, end) = check(past_tls, &input, login_tls);
    assert_eq!(written, auth_cleartext());
    assert!(matches!(end, End::Done(Login { .. })), "{end:?}");
}

#[test]
fn tls_required_stops_at_the_tls_request() {
    let mut l = CleartextLogin::new(Transport::TlsRequired);
    l.receive(&SSL);
    assert_eq!(l.step(), Step::Write(b"S".to_vec()));
    assert_eq!(l.step(), Step::TlsRequested);
    assert_eq!(l.step(), Step::TlsRequested, "until the caller says TLS is up");
    l.tls_established();
    assert_eq!(l.step(), Step::NeedMore);
}

#[test]
fn refusals() {
    let ssl_then_startup = [&SSL[..], &startup_message(&[("user", "a")])].concat();
    let protocol_2 = [0, 0, 0, 8, 0, 2, 0, 0];
    let cases: Vec<(Transport, Vec<u8>, SqlState, &str)> = vec![
        // A password in the clear never leaves the client's machine asked.
        (
            Transport::TlsRequired,
            startup_message(&[("user", "a")]),
            SqlState::InvalidAuthorization,
            "requires TLS",
        ),
        // Pipelined behind the SSLRequest, so sent in the clear.
        (
            Transport::TlsRequired,
            ssl_then_startup,
            SqlState::ProtocolViolation,
            "unencrypted data",
        ),
        (Transport::Tls, SSL.to_vec(), SqlState::ProtocolViolation, "after TLS"),
        (
            Transport::Tls,
            GSSENC.to_vec(),
            SqlState::ProtocolViolation,
            "after TLS",
        ),
        (
            Transport::Tunnel,
            protocol_2.to_vec(),
            SqlState::FeatureNotSupported,
            "2.0",
        ),
        (
            Transport::Tls,
            vec![0, 0, 0, 3],
            SqlState::ProtocolViolation,
            "out of range",
        ),
    ];
    for (t, input, code, words) in cases {
        let (_, end) = run(&mut CleartextLogin::new(t), &input, input.len(), login_tls);
        let End::Failed(got, msg) = end else {
            panic!("{t:?} {input:?}: {end:?}")
        };
        assert_eq!(got, code, "{msg}");
        assert!(msg.contains(words), "{msg}");
    }
}

#[test]
fn an_oversized_length_is_refused_before_its_bytes_arrive() {
    // Four bytes of a 2 GB startup packet, then five of a 2 GB password.
    let (_, end) = run(
        &mut StartupReader::new(Transport::Tunnel),
        &[0x7f, 0xff, 0xff, 0xff],
        1,
        reader_tls,
    );
    assert!(matches!(end, End::Failed(SqlState::ProtocolViolation, _)), "{end:?}");
    let input = [&startup_message(&[("user", "a")])[..], &[b'p', 0x7f, 0xff, 0xff, 0xff]].concat();
    let (_, end) = check(login(Transport::Tls), &input, login_tls);
    let End::Failed(SqlState::ProtocolViolation, msg) = end else {
        panic!("{end:?}")
    };
    assert!(msg.contains("password"), "{msg}");
    // Just over the limit: refused too.
    let too_long = password_message(&vec![b'x'; MAX_STARTUP]);
    let input = [&startup_message(&[("user", "a")])[..], &too_long].concat();
    let (_, end) = run(&mut CleartextLogin::new(Transport::Tls), &input, 64, login_tls);
    assert!(matches!(end, End::Failed(SqlState::ProtocolViolation, _)), "{end:?}");
}

#[test]
fn the_answer_must_be_a_password_message() {
    let startup = startup_message(&[("user", "a")]);
    for (answer, words) in [
        (QUERY.to_vec(), "got 'Q'"),
        (b"p\0\0\0\x06ab".to_vec(), "NUL-terminated"),
        (b"p\0\0\0\x07a\0b".to_vec(), "NUL-terminated"),
        (b"p\0\0\0\x07\xff\xfe\0".to_vec(), "UTF-8"),
    ] {
        let input = [&startup[..], &answer].concat();
        let (written, end) = check(login(Transport::Tls), &input, login_tls);
        assert_eq!(written, auth_cleartext());
        let End::Failed(SqlState::ProtocolViolation, msg) = end else {
            panic!("{answer:?}: {end:?}")
        };
        assert!(msg.contains(words), "{msg}");
    }
}

#[test]
fn a_half_sent_login_waits() {
    let input = [&startup_message(&[("user", "a")])[..], &password_message(b"tok")].concat();
    for cut in 0..input.len() {
        let (_, end) = run(&mut CleartextLogin::new(Transport::Tls), &input[..cut], 1, login_tls);
        assert_eq!(end, End::Starved, "{cut}");
    }
}

#[test]
fn over_is_over() {
    let mut r = StartupReader::new(Transport::Tunnel);
    r.receive(&startup_message(&[("user", "a")]));
    assert!(matches!(r.step(), Step::Done(_)));
    r.receive(QUERY);
    assert!(matches!(r.step(), Step::Failed(_)));
    let mut l = CleartextLogin::new(Transport::Tls);
    l.receive(&cancel_request(1, 2));
    assert!(matches!(l.step(), Step::Cancel(_)));
    assert!(matches!(l.step(), Step::Failed(_)));
}

#[test]
fn bytes_before_tls_is_up_are_refused() {
    let mut r = StartupReader::new(Transport::TlsRequired);
    r.receive(&SSL);
    assert_eq!(r.step(), Step::Write(b"S".to_vec()));
    r.receive(&startup_message(&[("user", "a")]));
    r.tls_established();
    assert!(matches!(r.step(), Step::Failed(f) if f.message.contains("unencrypted")));
}

#[test]
fn secrets_are_not_printed() {
    let l = Login {
        params: vec![],
        password: Password("hunter2".into()),
        leftover: vec![],
    };
    assert!(!format!("{l:?}").contains("hunter2"));
}

#[test]
fn refusals_encode_as_fatal_errors() {
    let f = Fatal::new(SqlState::InvalidAuthorization, "no grant");
    let e = f.encode();
    let (tag, n) = crate::frame(&e, MAX_MESSAGE).unwrap().unwrap();
    assert_eq!((tag, n), (b'E', e.len()));
    assert_eq!(error_fields(&e[5..]), ("28000".to_owned(), "no grant".to_owned()));
    assert!(e.windows(7).any(|w| w == b"SFATAL\0"));
}

/// Pseudo-random bytes, mostly mutated logins, in random chunks: every
/// run ends (a bounded number of steps per byte), never panics, and never
/// holds more than a startup packet and one read.
#[test]
fn garbage_never_panics_or_grows() {
    let seed = [
        &GSSENC[..],
        &SSL,
        &startup_message(&[("user", "alice")]),
        &password_message(b"tok"),
        QUERY,
    ]
    .concat();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..20_000u32 {
        let mut data = seed.clone();
        for _ in 0..(rnd() % 6) {
            let r = rnd();
            let at = (r >> 8) as usize % data.len().max(1);
            match r % 3 {
                0 if !data.is_empty() => data[at] = (r >> 32) as u8,
                1 => data.truncate(at),
                _ => data.insert(at, (r >> 32) as u8),
            }
        }
        if i % 7 == 0 {
            data.extend_from_slice(&PROTOCOL_3.to_be_bytes());
        }
        let t = [Transport::Tunnel, Transport::Tls, Transport::TlsRequired][i as usize % 3];
        let chunk = (rnd() % 16) as usize + 1;
        let mut l = CleartextLogin::new(t);
        let (mut at, mut ended) = (0, false);
        for _ in 0..=(4 * data.len() + 8) {
            let bounded = match &l.phase {
                Phase::Password { buf, .. } => buf.len(),
                _ => l.startup.buf.len(),
            };
            assert!(bounded <= MAX_STARTUP + chunk, "{bounded}");
            match l.step() {
                Step::NeedMore if at < data.len() => {
                    let end = (at + chunk).min(data.len());
                    l.receive(&data[at..end]);
                    at = end;
                }
                Step::Write(_) => {}
                Step::TlsRequested => l.tls_established(),
                _ => {
                    ended = true;
                    break;
                }
            }
        }
        assert!(ended, "{data:?} in chunks of {chunk}");
    }
}
