//! The gateway's routing from a Host header (or TLS server name) to a
//! destination (`destination_of`, `is_ip`), and the check on a connector's
//! advertised direct URL (`valid_direct_url`), on arbitrary strings.
//!
//! Input: one byte picks a server configuration (gateway domain, own host
//! name), the rest is the Host.
//!
//! Asserts: no panic; a destination is found only when the Host (less a
//! numeric port, case-folded) is exactly `<label>.<gateway domain>`, the
//! label a valid one-part resource name, and never for the server's own
//! name; the found label routes back to itself (with or without a port);
//! an IP address never names a destination; an accepted direct URL holds
//! nothing a shell or an ssh config line would read as more.
#![no_main]

use libfuzzer_sys::fuzz_target;

const CONFIGS: [(&str, &str); 4] = [
    ("localhost", "localhost"),
    ("infra.example.com", "infra.example.com"),
    ("gw.example.com", "api.example.com"),
    ("example.com", "infra.example.com"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&c, rest)) = data.split_first() else {
        return;
    };
    let Ok(host) = std::str::from_utf8(rest) else {
        return;
    };
    let (domain, own) = CONFIGS[usize::from(c) % CONFIGS.len()];
    let found = infra_server::fuzzing::destination_of(host, domain, own);
    if let Some(label) = &found {
        assert!(!label.is_empty() && !label.contains('.'), "label {label:?}");
        let r = infra_core::Resource::parse(label).expect("a routed label is a valid resource");
        assert_eq!(r.as_str(), label);
        let name = match host.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
            _ => host,
        };
        assert_eq!(name.to_ascii_lowercase(), format!("{label}.{domain}"));
        assert_ne!(name.to_ascii_lowercase(), own);
        for again in [format!("{label}.{domain}"), format!("{label}.{domain}:443")] {
            assert_eq!(
                infra_server::fuzzing::destination_of(&again, domain, own).as_deref(),
                Some(label.as_str())
            );
        }
    }
    if infra_server::fuzzing::is_ip(host) {
        assert!(
            infra_server::fuzzing::destination_of(host, "localhost", "localhost").is_none(),
            "IP address {host:?} routed to a destination"
        );
    }
    if infra_server::fuzzing::valid_direct_url(host) {
        assert!(host.len() <= 300);
        assert!(
            !host
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "\"'`$;#\\&|<>(){}*?!%=,@".contains(c)),
            "direct URL {host:?} accepted"
        );
    }
});
