//! Syslog (RFC 5424) to a collector over TCP (octet-counted frames, RFC
//! 6587) or UDP (one datagram per event, RFC 5426).

use infra_store::AuditRow;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpStream, UdpSocket};

/// Facility 13, "log audit".
const FACILITY: u8 = 13;
/// Larger datagrams are cut (their JSON then ends early; the structured
/// data still names the event).
const MAX_DATAGRAM: usize = 60_000;
/// RFC 5612's enterprise number for documentation: the structured data's id.
const SD_ID: &str = "infra@32473";

enum Transport {
    Tcp,
    Udp,
}

pub(crate) struct SyslogSink {
    url: String,
    addr: String,
    transport: Transport,
    host: String,
    tcp: Option<TcpStream>,
    udp: Option<UdpSocket>,
}

impl SyslogSink {
    /// `tcp://HOST:PORT` or `udp://HOST:PORT`.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let (transport, addr) = if let Some(a) = url.strip_prefix("tcp://") {
            (Transport::Tcp, a)
        } else if let Some(a) = url.strip_prefix("udp://") {
            (Transport::Udp, a)
        } else {
            return Err(format!("syslog target '{url}': use tcp://HOST:PORT or udp://HOST:PORT"));
        };
        if addr
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(format!("syslog target '{url}': the address must be HOST:PORT"));
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or_else(|| "-".to_owned());
        Ok(Self {
            url: url.to_owned(),
            addr: addr.to_owned(),
            transport,
            host,
            tcp: None,
            udp: None,
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) async fn send(&mut self, rows: &[AuditRow]) -> Result<(), String> {
        let r = match self.transport {
            Transport::Tcp => self.send_tcp(rows).await,
            Transport::Udp => self.send_udp(rows).await,
        };
        if r.is_err() {
            // Start afresh next time.
            self.tcp = None;
            self.udp = None;
        }
        r.map_err(|e| format!("{}: {e}", self.url))
    }

    async fn send_tcp(&mut self, rows: &[AuditRow]) -> std::io::Result<()> {
        if self.tcp.is_none() {
            let s = tokio::time::timeout(std::time::Duration::from_secs(5), TcpStream::connect(&self.addr))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
            s.set_nodelay(true)?;
            self.tcp = Some(s);
        }
        let mut buf = Vec::with_capacity(rows.len() * 500);
        for r in rows {
            let m = message(r, &self.host);
            buf.extend_from_slice(format!("{} ", m.len()).as_bytes());
            buf.extend_from_slice(m.as_bytes());
        }
        let s = self
            .tcp
            .as_mut()
            .ok_or_else(|| std::io::Error::other("not connected"))?;
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            s.write_all(&buf).await?;
            s.flush().await
        })
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out"))?
    }

    async fn send_udp(&mut self, rows: &[AuditRow]) -> std::io::Result<()> {
        if self.udp.is_none() {
            let s = UdpSocket::bind(if self.addr.starts_with('[') {
                "[::]:0"
            } else {
                "0.0.0.0:0"
            })
            .await?;
            s.connect(&self.addr).await?;
            self.udp = Some(s);
        }
        let s = self
            .udp
            .as_ref()
            .ok_or_else(|| std::io::Error::other("not connected"))?;
        for r in rows {
            let m = message(r, &self.host);
            let cut = m.len().min(MAX_DATAGRAM);
            s.send(&m.as_bytes()[..cut]).await?;
        }
        Ok(())
    }
}

/// One event as an RFC 5424 message: the chain's `seq`, the action and
/// result as structured data, the event as JSON as the message.
pub(crate) fn message(r: &AuditRow, host: &str) -> String {
    let severity = if r.result == "success" { 6 } else { 4 };
    let pri = u16::from(FACILITY) * 8 + severity;
    format!(
        "<{pri}>1 {} {host} infra - audit [{SD_ID} seq=\"{}\" action=\"{}\" result=\"{}\" hash=\"{}\"] {}",
        crate::wire::time(r.time_ms),
        r.seq,
        sd_escape(&r.action),
        sd_escape(&r.result),
        r.hash,
        super::json_line(r)
    )
}

/// A structured-data parameter value: `"`, `\` and `]` escaped.
fn sd_escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_rfc_5424_with_the_sequence_in_structured_data() {
        let r = AuditRow {
            seq: 42,
            time_ms: 1_796_634_432_856,
            actor: "a@example.com".into(),
            action: "login".into(),
            target: "a@example.com".into(),
            source: "127.0.0.1".into(),
            result: "denied".into(),
            detail: "x\"]".into(),
            prev_hash: "0".repeat(64),
            hash: "f".repeat(64),
        };
        let m = message(&r, "host1");
        assert!(
            m.starts_with("<108>1 2026-12-07T09:07:12.856Z host1 infra - audit [infra@32473 seq=\"42\" action=\"login\" result=\"denied\""),
            "{m}"
        );
        let json = m.split_once("] {").map(|(_, j)| format!("{{{j}")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["seq"], 42);
        assert_eq!(sd_escape("a\"b]c\\"), "a\\\"b\\]c\\\\");
        assert!(SyslogSink::parse("http://x:1").is_err());
        assert!(SyslogSink::parse("tcp://x").is_err());
        assert!(SyslogSink::parse("udp://127.0.0.1:514").is_ok());
    }
}
