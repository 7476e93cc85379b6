//! Recording pieces from connectors, as an attacker with a connector key
//! would send them: each is taken only at the byte the server has
//! reached, only for a destination the sender serves, only from the
//! connector that began the recording, and never once stored.

use infra_tunnel::proto::{RecordingChunk, RecordingKind, RecordingMeta};

use super::*;

const ID: &str = "Rec0rding0000000000000000";

fn meta(destination: &str, ended: bool) -> RecordingMeta {
    RecordingMeta {
        kind: RecordingKind::KubeExec,
        user: "alice@example.com".into(),
        destination: destination.into(),
        source: "127.0.0.1".into(),
        target: "dev/web".into(),
        command: "sh".into(),
        started_ms: 1_700_000_000_000,
        ended_ms: ended.then_some(1_700_000_001_000),
        bytes_in: 3,
        bytes_out: 5,
        exit: if ended { "exit 0".into() } else { String::new() },
        truncated: false,
    }
}

fn piece(id: &str, offset: u64, data: &str, meta: RecordingMeta) -> ConnectorMsg {
    ConnectorMsg::Recording(RecordingChunk {
        id: id.into(),
        offset,
        data: data.into(),
        meta,
    })
}

/// Sends `msg` and returns the server's answer about recording `id`:
/// (bytes it has, stored, error).
async fn send(
    to: &LineSender,
    from: &mut LineReader<Incoming>,
    msg: ConnectorMsg,
) -> (String, u64, bool, Option<String>) {
    to.send(&msg).await.unwrap();
    loop {
        match within(from.next::<ControlMsg>()).await.unwrap() {
            Some(ControlMsg::RecordingAck {
                id,
                have,
                stored,
                error,
            }) => return (id, have, stored, error),
            Some(_) => {}
            None => panic!("the control stream ended"),
        }
    }
}

#[tokio::test]
async fn recording_pieces_are_taken_once_in_order_and_only_from_their_connector() {
    let t = testing::state().await;
    let (mut c1, _s1) = connect_as(&t, "dc1", "web").await;
    let (to1, mut from1) = control_stream(&mut c1).await;
    wait_until_serving_for(&to1, &mut from1, "web").await;
    let (mut c2, _s2) = connect_as(&t, "dc2", "other").await;
    let (to2, mut from2) = control_stream(&mut c2).await;
    wait_until_serving_for(&to2, &mut from2, "other").await;

    let header = "{\"version\":2,\"width\":80,\"height\":24,\"timestamp\":1700000000}\n";
    let h = header.len() as u64;
    let (_, have, stored, error) = send(&to1, &mut from1, piece(ID, 0, header, meta("web", false))).await;
    assert_eq!((have, stored, error), (h, false, None));
    // Sent again (a reconnect): nothing twice.
    let (_, have, ..) = send(&to1, &mut from1, piece(ID, 0, header, meta("web", false))).await;
    assert_eq!(have, h);
    // A gap: the server says where it is.
    let (_, have, ..) = send(
        &to1,
        &mut from1,
        piece(ID, h + 10, "[1.0,\"o\",\"x\"]\n", meta("web", false)),
    )
    .await;
    assert_eq!(have, h);
    // Not whole lines; not a destination of this connector; not an id.
    let (_, _, _, error) = send(&to1, &mut from1, piece(ID, h, "[1.0,\"o\"", meta("web", false))).await;
    assert!(error.is_some_and(|e| e.contains("whole lines")));
    let (_, _, _, error) = send(&to1, &mut from1, piece(ID, h, "", meta("elsewhere", false))).await;
    assert!(error.is_some_and(|e| e.contains("not a destination of this connector")));
    let (_, _, _, error) = send(
        &to1,
        &mut from1,
        piece("../../../etc/passwd", 0, header, meta("web", false)),
    )
    .await;
    assert!(error.is_some_and(|e| e.contains("not a recording id")));

    // Another connector cannot add to it, end it, or claim it for its own
    // destination.
    let evil = "[1.5,\"o\",\"rm -rf / was never typed\"]\n";
    let (_, _, stored, error) = send(&to2, &mut from2, piece(ID, h, evil, meta("other", true))).await;
    assert!(!stored && error.is_some_and(|e| e.contains("another connector")));
    let (_, _, stored, error) = send(&to2, &mut from2, piece(ID, h, evil, meta("web", true))).await;
    assert!(!stored && error.is_some_and(|e| e.contains("not a destination of this connector")));

    // Its own connector ends it: stored, its digest audited.
    let out = "[0.5,\"o\",\"hello\\r\\n\"]\n";
    let (_, have, stored, error) = send(&to1, &mut from1, piece(ID, h, out, meta("web", true))).await;
    assert_eq!((have, stored, error), (h + out.len() as u64, true, None));
    let text = std::fs::read_to_string(t.state.settings.recordings_dir.join(format!("{ID}.cast"))).unwrap();
    assert_eq!(text, format!("{header}{out}"));
    let mut c = t.state.store.conn().await.unwrap();
    let audited = infra_store::audit::actions_after(&mut c, 0, crate::recordings::RECORDED, 10)
        .await
        .unwrap();
    assert_eq!(audited.len(), 1);
    assert!(audited[0].detail.contains(&infra_auth::sha256_hex(text.as_bytes())));
    // Once stored, nothing changes it.
    let (_, have, stored, _) = send(
        &to1,
        &mut from1,
        piece(ID, h + out.len() as u64, evil, meta("web", true)),
    )
    .await;
    assert!(stored);
    assert_eq!(have, h + out.len() as u64);
    let after = std::fs::read_to_string(t.state.settings.recordings_dir.join(format!("{ID}.cast"))).unwrap();
    assert_eq!(after, text);
}
