//! Everything the connector parses from a client (and from the database),
//! fed arbitrary bytes: it must return an error or a value, never panic,
//! hang or allocate what a length field claims.
//!
//! cargo fuzz run wire -- -max_total_time=60   (from crates/infra-proto-pg)
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = infra_proto_pg::parse_startup(data);
    let mut at = 0;
    while let Ok(Some((tag, len))) = infra_proto_pg::frame(&data[at..], infra_proto_pg::MAX_MESSAGE) {
        let body = &data[at + 5..at + len];
        match tag {
            b'Q' => drop(infra_proto_pg::query_bytes(body)),
            b'P' => drop(infra_proto_pg::parse_message(body)),
            b'F' => drop(infra_proto_pg::function_call(body)),
            b'B' => drop(infra_proto_pg::bind(body)),
            b'E' => {
                let _ = infra_proto_pg::execute_portal(body);
                let _ = infra_proto_pg::error_fields(body);
            }
            b'C' => {
                let _ = infra_proto_pg::command_tag(body);
                let _ = infra_proto_pg::close_target(body);
            }
            b'p' => drop(infra_proto_pg::password(body)),
            _ => {}
        }
        at += len;
    }
});
