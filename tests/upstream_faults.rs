//! Upstream misbehaviour: refused connections, 5xx, timeouts, stalls, trickles, bad bodies and
//! 429s give a JSON error (or the stored copy, served stale), never a stored bad document.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::upstream_faults::assert_fault;
use support::{tree, FakeRegistry, Faults, Sluice};

#[test]
fn refused_connections_and_5xx_give_502_or_the_stale_copy() {
    assert_fault(
        Faults {
            down: true,
            ..Faults::default()
        },
        &[502],
        "refused",
        "",
    );
    assert_fault(
        Faults {
            status: Some(503),
            ..Faults::default()
        },
        &[502],
        "503",
        "",
    );
}
#[test]
fn timeouts_stalls_and_trickles_give_504_or_the_stale_copy() {
    assert_fault(
        Faults {
            delay: Some(Duration::from_secs(3)),
            ..Faults::default()
        },
        &[504],
        "timeout before headers",
        "",
    );
    assert_fault(
        Faults {
            stall_after: Some(10),
            ..Faults::default()
        },
        &[504, 502],
        "stall mid-body",
        "",
    );
    assert_fault(
        Faults {
            drip: Some(Duration::from_millis(400)),
            ..Faults::default()
        },
        &[504, 502],
        "1 byte every 0.4 s",
        "",
    );
}
#[test]
fn bad_bodies_are_refused_and_never_stored() {
    assert_fault(
        Faults {
            truncate: true,
            ..Faults::default()
        },
        &[502],
        "truncated",
        "",
    );
    assert_fault(
        Faults {
            html: true,
            ..Faults::default()
        },
        &[502],
        "HTML with 200",
        "",
    );
    assert_fault(
        Faults {
            body: Some(("application/json".into(), b"{not json".to_vec())),
            ..Faults::default()
        },
        &[502],
        "invalid JSON",
        "",
    );
    assert_fault(
        Faults {
            body: Some((
                "application/json".into(),
                br#"{"name":"evil","versions":{}}"#.to_vec(),
            )),
            ..Faults::default()
        },
        &[502],
        "another package's document",
        "",
    );
    assert_fault(
        Faults {
            gzip_bomb: Some(64 << 20),
            ..Faults::default()
        },
        &[502],
        "gzip bomb",
        "[upstream]\nmax_packument = \"1MiB\"\n",
    );
    assert_fault(
        Faults {
            body: Some(("application/json".into(), vec![b' '; 2 << 20])),
            ..Faults::default()
        },
        &[502],
        "a document over max_packument",
        "[upstream]\nmax_packument = \"1MiB\"\n",
    );
    assert_fault(
        Faults {
            redirect: Some("http://169.254.169.254/latest/meta-data/".into()),
            ..Faults::default()
        },
        &[502],
        "redirect to another host",
        "",
    );
}
#[test]
fn repeated_failures_open_the_circuit_and_retry_after_is_honoured() {
    let upstream = FakeRegistry::start();
    tree(&upstream);
    let sluice = Sluice::start(&upstream, "left\nright\n", "");
    upstream.set_faults(Faults {
        status: Some(429),
        retry_after: Some(30),
        ..Faults::default()
    });
    let (status, _) = sluice.get_json("/left");
    assert_eq!(status, 502);
    let after_first = upstream.total_requests();
    for _ in 0..10 {
        let (status, body) = sluice.get_json("/right");
        assert_eq!(status, 502);
        assert!(
            body["error"].as_str().unwrap().contains("retrying in"),
            "{body}"
        );
    }
    assert_eq!(
        upstream.total_requests(),
        after_first,
        "upstream is left alone while it asked to"
    );
}
