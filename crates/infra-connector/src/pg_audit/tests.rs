//! The audit fed conversations as a client and PostgreSQL have them.

use super::*;

/// One message of a conversation, in either direction.
enum M {
    /// From the client: tag and body.
    C(u8, Vec<u8>),
    /// From the database: tag and body.
    S(u8, Vec<u8>),
}

fn z(b: &[u8]) -> Vec<u8> {
    [b, &[0]].concat()
}

fn q(sql: &[u8]) -> M {
    M::C(b'Q', z(sql))
}

fn parse(name: &str, sql: &[u8]) -> M {
    M::C(b'P', [z(name.as_bytes()), z(sql), vec![0, 0]].concat())
}

fn bind(portal: &str, statement: &str, params: &[&[u8]]) -> M {
    let mut b = [z(portal.as_bytes()), z(statement.as_bytes()), vec![0, 0]].concat();
    b.extend_from_slice(&u16::try_from(params.len()).unwrap().to_be_bytes());
    for p in params {
        b.extend_from_slice(&u32::try_from(p.len()).unwrap().to_be_bytes());
        b.extend_from_slice(p);
    }
    b.extend_from_slice(&[0, 0]);
    M::C(b'B', b)
}

fn execute(portal: &str) -> M {
    M::C(b'E', [z(portal.as_bytes()), vec![0, 0, 0, 0]].concat())
}

fn sync() -> M {
    M::C(b'S', Vec::new())
}

fn done(tag: &str) -> M {
    M::S(b'C', z(tag.as_bytes()))
}

fn error(code: &str) -> M {
    M::S(
        b'E',
        infra_proto_pg::error_response("ERROR", code, "it failed")[5..].to_vec(),
    )
}

fn ready() -> M {
    M::S(b'Z', vec![b'I'])
}

/// Feeds `conversation`, ends the session if `end`, and compares each event
/// with (outcome, a piece of its detail), in order.
fn check(keep: bool, conversation: Vec<M>, end: bool, expected: &[(Outcome, &str)]) {
    let mut a = Audit::new(keep);
    let mut got = Vec::new();
    for m in conversation {
        match m {
            M::C(tag, body) => a.client(tag, &body),
            M::S(tag, body) => got.extend(a.server(tag, &body)),
        }
    }
    if end {
        got.extend(a.end("client closed"));
    }
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for (e, (outcome, piece)) in got.iter().zip(expected) {
        assert_eq!(e.outcome, *outcome, "{e:?}");
        assert!(e.detail.contains(piece), "{piece} not in {e:?}");
    }
}

use Outcome::{Failure, Success};

#[test]
fn simple_queries_pipelined_each_get_their_own_outcome() {
    check(
        false,
        vec![
            q(b"select 1"),
            q(b"select * from nope"),
            q(b"select 3; select 4"),
            done("SELECT 1"),
            ready(),
            error("42P01"),
            ready(),
            done("SELECT 1"),
            done("SELECT 1"),
            ready(),
        ],
        false,
        &[
            (Success, "query=\"select 1\" duration_ms="),
            (Failure, "error=\"42P01 it failed\""),
            (Success, "tag=\"SELECT 1;SELECT 1\""),
        ],
    );
}

#[test]
fn an_extended_error_skips_to_sync() {
    check(
        false,
        vec![
            parse("", b"select 4"),
            bind("", "", &[]),
            execute(""),
            parse("", b"select 1/0"),
            bind("", "", &[]),
            execute(""),
            parse("", b"select 6"),
            bind("", "", &[]),
            execute(""),
            q(b"select 'discarded too'"),
            sync(),
            parse("", b"select 7"),
            bind("", "", &[]),
            execute(""),
            sync(),
            M::S(b'1', vec![]),
            M::S(b'2', vec![]),
            done("SELECT 1"),
            M::S(b'1', vec![]),
            M::S(b'2', vec![]),
            error("22012"),
            ready(),
            M::S(b'1', vec![]),
            M::S(b'2', vec![]),
            done("SELECT 1"),
            ready(),
        ],
        false,
        &[
            (Success, "query=\"select 4\""),
            (Failure, "query=\"select 1/0\" duration_ms="),
            (Failure, "query=\"select 6\" not_run="),
            (Failure, "query=\"select 'discarded too'\" not_run="),
            (Success, "query=\"select 7\""),
        ],
    );
}

#[test]
fn an_error_before_any_execute_skips_what_follows_until_sync() {
    // Parse fails, flushed; the client sends Bind/Execute later, then Sync.
    check(
        false,
        vec![
            parse("s", b"selec nonsense"),
            M::C(b'H', vec![]),
            error("42601"),
            bind("", "s", &[]),
            execute(""),
            sync(),
            ready(),
            q(b"select 'after'"),
            done("SELECT 1"),
            ready(),
        ],
        false,
        &[
            (Failure, "query=\"selec nonsense\" not_run="),
            (Success, "query=\"select 'after'\""),
        ],
    );
}

#[test]
fn named_statements_parameters_and_suspended_portals() {
    check(
        false,
        vec![
            parse("s1", b"select $1"),
            bind("p1", "s1", &[b"42"]),
            M::C(b'E', [z(b"p1"), vec![0, 0, 0, 1]].concat()),
            execute("p1"),
            sync(),
            bind("", "unknown-one", &[]),
            execute(""),
            sync(),
            M::S(b'D', vec![0, 0]),
            M::S(b's', vec![]),
            done("SELECT 1"),
            ready(),
            error("26000"),
            ready(),
        ],
        false,
        &[
            (Success, "query=\"select $1\" params=1 redacted duration_ms="),
            (Success, "tag=\"SELECT 1\""),
            (Failure, "query=unknown statement=\"unknown-one\" duration_ms="),
        ],
    );
    check(
        true,
        vec![parse("", b"select $1"), bind("", "", &[b"secret"]), execute(""), sync()],
        true,
        &[(Failure, "params=[\"secret\"]")],
    );
}

#[test]
fn text_that_is_not_utf8_is_shown_lossily_and_in_hex() {
    check(
        false,
        vec![
            q(b"select 'caf\xe9'"),
            ready(),
            M::C(b'P', [z(b"\xff"), z(b"select '\xe9'"), vec![0, 0]].concat()),
            M::C(b'B', [&b"\xfe\0\xff\0"[..], &[0, 0, 0, 0, 0, 0]].concat()),
            M::C(b'E', [&b"\xfe\0"[..], &[0, 0, 0, 0]].concat()),
            sync(),
            done("SELECT 1"),
            ready(),
        ],
        false,
        &[
            (
                Success,
                "query=\"select 'caf\u{fffd}'\" query_hex=73656c6563742027636166e927",
            ),
            (Success, "query=\"select '\u{fffd}'\" query_hex="),
        ],
    );
    // A query without its terminating NUL still shows.
    check(
        false,
        vec![M::C(b'Q', b"drop table t".to_vec())],
        true,
        &[(Failure, "drop table t")],
    );
    // Long text is cut, on a character boundary or not.
    let long = [b"select '".as_slice(), &[0xe9; 5000], b"'"].concat();
    let mut a = Audit::new(false);
    a.client(b'Q', &z(&long));
    let e = a.end("client closed");
    assert!(e[0].detail.len() < 6 * MAX_AUDIT_SQL, "{}", e[0].detail.len());
    assert!(e[0].detail.contains("…\" query_hex="), "{}", e[0].detail.len());
}

#[test]
fn function_calls_are_statements() {
    let call = |oid: u32, args: &[&[u8]]| {
        let mut b = oid.to_be_bytes().to_vec();
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&u16::try_from(args.len()).unwrap().to_be_bytes());
        for a in args {
            b.extend_from_slice(&u32::try_from(a.len()).unwrap().to_be_bytes());
            b.extend_from_slice(a);
        }
        b.extend_from_slice(&[0, 0]);
        M::C(b'F', b)
    };
    check(
        false,
        vec![
            call(871, &[b"x"]),
            call(1, &[]),
            M::C(b'F', vec![0, 0]),
            M::S(b'V', vec![0, 0, 0, 1, b'X']),
            ready(),
            error("42883"),
            ready(),
        ],
        true,
        &[
            (Success, "function_call oid=871 args=1 duration_ms="),
            (Failure, "function_call oid=1 args=0 duration_ms="),
            (Failure, "function_call malformed="),
        ],
    );
    check(true, vec![call(871, &[b"x"])], true, &[(Failure, "params=[\"x\"]")]);
}

#[test]
fn what_is_in_flight_when_the_session_ends_is_reported_unknown() {
    check(
        false,
        vec![
            q(b"select 1"),
            q(b"insert into t values (1)"),
            done("SELECT 1"),
            ready(),
        ],
        true,
        &[
            (Success, "select 1"),
            (
                Failure,
                "outcome=\"unknown: the session ended (client closed) before the result\"",
            ),
        ],
    );
    // Statements skipped by an error stay "not run"; Syncs report nothing.
    check(
        false,
        vec![
            parse("", b"select 1/0"),
            bind("", "", &[]),
            execute(""),
            execute(""),
            sync(),
            error("22012"),
        ],
        true,
        &[(Failure, "error=\"22012"), (Failure, "not_run=")],
    );
}

#[test]
fn copy_and_empty_queries() {
    check(
        false,
        vec![
            q(b"copy t from stdin"),
            M::S(b'G', vec![0, 0, 0]),
            M::C(b'd', b"1\n".to_vec()),
            M::C(b'c', vec![]),
            done("COPY 1"),
            ready(),
            q(b""),
            M::S(b'I', vec![]),
            ready(),
        ],
        false,
        &[(Success, "tag=\"COPY 1\""), (Success, "tag=\"EMPTY QUERY\"")],
    );
}

#[test]
fn named_maps_stay_bounded() {
    let mut a = Audit::new(false);
    for i in 0..MAX_NAMED + 50 {
        a.client(
            b'P',
            &[z(format!("s{i}").as_bytes()), z(b"select 1"), vec![0, 0]].concat(),
        );
        a.client(
            b'B',
            &[z(format!("p{i}").as_bytes()), z(b"s1"), vec![0, 0, 0, 0, 0, 0]].concat(),
        );
    }
    assert!(a.prepared.len() <= MAX_NAMED);
    assert!(a.portals.len() <= MAX_NAMED);
    a.client(
        b'C',
        &[&b"S"[..], &z(format!("s{}", MAX_NAMED + 49).as_bytes())].concat(),
    );
    assert!(!a.prepared.contains_key(format!("s{}", MAX_NAMED + 49).as_bytes()));
}
