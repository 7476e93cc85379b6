//! Signed checkpoints of the audit chain, and verification that starts
//! from them.
//!
//! A checkpoint names an event (`seq`) and its hash. Two kinds: where the
//! archived part of the chain ends (the events before it were written to
//! an archive file and deleted from the table), and how far the last
//! verification got. Each is signed with an Ed25519 key derived from the
//! root key: every replica derives the same key, nothing without the root
//! key can forge a checkpoint, and the public key can be handed to anyone
//! who wants to check one (`GET /api/audit/checkpoints`).
//!
//! A routine verification starts at the newest checkpoint and checks only
//! what is new; a full one walks every archive file, then the table.

use std::io::BufRead as _;
use std::path::Path;

use infra_auth::envelope::RootKey;
use infra_auth::jwt::{Jwks, SigningKey, Verifier};
use infra_store::checkpoints::{Checkpoint, VERIFIED};
use infra_store::{AuditRow, Conn, StoreError, VerifyOutcome, now_ms};
use serde::{Deserialize, Serialize};

const PURPOSE: &str = "infra audit checkpoint signing key v1";
const ISSUER: &str = "infra-audit";
const AUDIENCE: &str = "infra-audit-checkpoint";
/// Checkpoints do not expire: their claim is about the past.
const LIFETIME_SECS: i64 = 100 * 365 * 24 * 3600;

/// The checkpoint signing key.
pub(crate) fn key(root: &RootKey) -> Result<SigningKey, String> {
    SigningKey::from_seed(root.derive(PURPOSE).expose()).map_err(|e| format!("checkpoint key: {e}"))
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    iat: i64,
    nbf: i64,
    exp: i64,
    seq: i64,
    kind: String,
    first_seq: i64,
    hash: String,
    archive: Option<String>,
    archive_sha256: Option<String>,
}

/// A new checkpoint, signed.
pub(crate) fn make(
    root: &RootKey,
    kind: &str,
    (first_seq, seq, hash): (i64, i64, &str),
    archive: Option<(&str, &str)>,
) -> Result<Checkpoint, String> {
    let now = now_ms();
    let claims = Claims {
        iss: ISSUER.into(),
        sub: "audit".into(),
        aud: AUDIENCE.into(),
        iat: now / 1000,
        nbf: now / 1000 - 60,
        exp: now / 1000 + LIFETIME_SECS,
        seq,
        kind: kind.into(),
        first_seq,
        hash: hash.into(),
        archive: archive.map(|(n, _)| n.to_owned()),
        archive_sha256: archive.map(|(_, h)| h.to_owned()),
    };
    let value = serde_json::to_value(&claims).map_err(|e| e.to_string())?;
    let token = key(root)?.sign_value(&value).map_err(|e| e.to_string())?;
    Ok(Checkpoint {
        seq,
        kind: kind.into(),
        first_seq,
        hash: hash.into(),
        archive: claims.archive,
        archive_sha256: claims.archive_sha256,
        created_at: now,
        token,
    })
}

/// Whether `cp`'s signature is good and says what its row says.
pub(crate) fn check(root: &RootKey, cp: &Checkpoint) -> Result<(), String> {
    let k = key(root)?;
    let v = Verifier::new(&Jwks { keys: vec![k.jwk()] }, ISSUER);
    let c: Claims = v
        .verify_as(&cp.token, AUDIENCE)
        .map_err(|e| format!("checkpoint at event {}: bad signature ({e})", cp.seq))?;
    let same = c.seq == cp.seq
        && c.kind == cp.kind
        && c.first_seq == cp.first_seq
        && c.hash == cp.hash
        && c.archive == cp.archive
        && c.archive_sha256 == cp.archive_sha256;
    if same {
        Ok(())
    } else {
        Err(format!(
            "checkpoint at event {}: its fields do not match what was signed",
            cp.seq
        ))
    }
}

/// What a verification found, with where it started.
pub(crate) struct Verified {
    pub(crate) outcome: VerifyOutcome,
    /// The event it started after (0: the start of the chain).
    pub(crate) from: i64,
    /// Archive files checked.
    pub(crate) archives: usize,
}

/// Verifies the chain: `full` walks every archive file in `archive_dir`
/// and then the whole table; otherwise it starts at the newest checkpoint.
/// `progress` hears the events checked so far.
pub(crate) async fn verify(
    c: &mut Conn,
    root: &RootKey,
    archive_dir: &Path,
    full: bool,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<Verified, StoreError> {
    let archived = infra_store::checkpoints::archives(c).await?;
    for cp in &archived {
        if let Err(reason) = check(root, cp) {
            return Ok(broken(cp.seq, reason, 0, 0));
        }
    }
    let mut checked = 0u64;
    let mut anchor: Option<(i64, String)> = None;
    let mut archives = 0;
    if full {
        for cp in &archived {
            let prev = anchor.as_ref().map_or_else(|| "0".repeat(64), |(_, h)| h.clone());
            let dir = archive_dir.to_path_buf();
            let cp2 = cp.clone();
            let r = tokio::task::spawn_blocking(move || check_archive(&dir, &cp2, &prev))
                .await
                .unwrap_or_else(|e| Err((cp.first_seq, e.to_string())));
            match r {
                Ok(n) => checked += n,
                Err((seq, reason)) => return Ok(broken(seq, reason, checked, archives)),
            }
            archives += 1;
            progress(checked);
            anchor = Some((cp.seq, cp.hash.clone()));
        }
    } else {
        // The newest checkpoint of either kind.
        let verified = infra_store::checkpoints::latest(c, VERIFIED).await?;
        if let Some(v) = &verified
            && let Err(reason) = check(root, v)
        {
            return Ok(broken(v.seq, reason, 0, 0));
        }
        let newest = archived
            .last()
            .into_iter()
            .chain(verified.as_ref())
            .max_by_key(|cp| cp.seq);
        if let Some(cp) = newest {
            if cp.kind == VERIFIED {
                // The event it names must still be what was verified.
                match infra_store::audit::get(c, cp.seq).await? {
                    Some(r) if r.hash == cp.hash => {}
                    _ => {
                        return Ok(broken(
                            cp.seq,
                            format!(
                                "event {} no longer matches the last verification (edited or deleted); run a full verification",
                                cp.seq
                            ),
                            0,
                            0,
                        ));
                    }
                }
            }
            anchor = Some((cp.seq, cp.hash.clone()));
        }
    }
    let from = anchor.as_ref().map_or(0, |(s, _)| *s);
    let base = checked;
    let outcome = infra_store::audit::verify_from(c, anchor, &mut |n| progress(base + n)).await?;
    let outcome = match outcome {
        VerifyOutcome::Ok {
            events,
            last,
            last_hash,
        } => VerifyOutcome::Ok {
            events: base + events,
            last,
            last_hash,
        },
        VerifyOutcome::Broken { events, seq, reason } => VerifyOutcome::Broken {
            events: base + events,
            seq,
            reason,
        },
    };
    Ok(Verified {
        outcome,
        from,
        archives,
    })
}

fn broken(seq: i64, reason: String, events: u64, archives: usize) -> Verified {
    Verified {
        outcome: VerifyOutcome::Broken { events, seq, reason },
        from: 0,
        archives,
    }
}

/// Checks one archive file against its checkpoint: its SHA-256, and every
/// event's link from `prev` to the checkpoint's hash. The number of
/// events, or (seq, reason) at the first fault.
fn check_archive(dir: &Path, cp: &Checkpoint, prev: &str) -> Result<u64, (i64, String)> {
    let name = cp.archive.clone().unwrap_or_default();
    let path = dir.join(&name);
    let bytes = std::fs::read(&path).map_err(|e| (cp.first_seq, format!("archive {}: {e}", path.display())))?;
    if cp.archive_sha256.as_deref() != Some(infra_auth::sha256_hex(&bytes).as_str()) {
        return Err((
            cp.first_seq,
            format!("archive {name} is not the file its checkpoint signed (its SHA-256 differs)"),
        ));
    }
    let gz = flate2::read::GzDecoder::new(&bytes[..]);
    let mut expected = cp.first_seq;
    let mut prev = prev.to_owned();
    for line in std::io::BufReader::new(gz).lines() {
        let line = line.map_err(|e| (expected, format!("archive {name}: {e}")))?;
        let r: AuditRow =
            serde_json::from_str(&line).map_err(|e| (expected, format!("archive {name}: event {expected}: {e}")))?;
        infra_store::audit::check_link(&r, expected, &prev)
            .map_err(|reason| (expected, format!("archive {name}: {reason}")))?;
        prev = r.hash;
        expected += 1;
    }
    if expected - 1 != cp.seq || prev != cp.hash {
        return Err((
            expected,
            format!(
                "archive {name} ends at event {} but its checkpoint says {}",
                expected - 1,
                cp.seq
            ),
        ));
    }
    Ok(u64::try_from(cp.seq - cp.first_seq + 1).unwrap_or(0))
}

/// Writes `rows` (a verified stretch of the chain) as a gzip file of JSON
/// lines in `dir`, durably; returns its name and SHA-256.
pub(crate) fn write_archive(dir: &Path, rows: &[AuditRow]) -> std::io::Result<(String, String)> {
    use std::io::Write as _;
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Err(std::io::Error::other("nothing to archive"));
    };
    create_private_dir(dir)?;
    let name = format!("audit-{:012}-{:012}.jsonl.gz", first.seq, last.seq);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for r in rows {
        serde_json::to_writer(&mut gz, r)?;
        gz.write_all(b"\n")?;
    }
    let bytes = gz.finish()?;
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        // The audit trail is for the operator's eyes only.
        let mut f = {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?
        };
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(&name))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok((name, infra_auth::sha256_hex(&bytes)))
}

/// Creates `dir` (and its parents) readable by this user only, if missing.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use infra_store::checkpoints::ARCHIVE;

    #[test]
    fn checkpoints_are_signed_and_any_change_is_caught() {
        let root = RootKey::generate().unwrap();
        let cp = make(
            &root,
            ARCHIVE,
            (1, 10, &"a".repeat(64)),
            Some(("f.gz", &"b".repeat(64))),
        )
        .unwrap();
        check(&root, &cp).unwrap();
        let mut moved = cp.clone();
        moved.seq = 11;
        assert!(check(&root, &moved).is_err());
        let mut rehashed = cp.clone();
        rehashed.hash = "c".repeat(64);
        assert!(check(&root, &rehashed).is_err());
        // Another root key's signature is no signature here.
        let other = make(&RootKey::generate().unwrap(), ARCHIVE, (1, 10, &"a".repeat(64)), None).unwrap();
        assert!(check(&root, &other).is_err());
    }

    #[test]
    fn archives_are_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("archive");
        let row = AuditRow {
            seq: 1,
            time_ms: 1,
            actor: "a".into(),
            action: "login".into(),
            target: "a".into(),
            source: "s".into(),
            result: "success".into(),
            detail: String::new(),
            prev_hash: "0".repeat(64),
            hash: "f".repeat(64),
        };
        let (name, sha) = write_archive(&at, std::slice::from_ref(&row)).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&at), 0o700);
        assert_eq!(mode(&at.join(&name)), 0o600);
        assert_eq!(infra_auth::sha256_hex(&std::fs::read(at.join(&name)).unwrap()), sha);
    }
}
