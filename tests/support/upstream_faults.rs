//! One upstream fault, checked end to end: a document not stored gets a JSON error and is not
//! kept; a stored one that is due is served stale.

use super::{tree, FakeRegistry, Faults, Sluice};

/// Start a sluice with a short upstream timeout; `left` is stored.
///
/// `policy.refresh` keeps its default (ten minutes), so no scheduled refresh runs during the
/// test: one falling between `mark_stale` and the next request would revalidate `left` and
/// make it fresh again (a busy machine widens that window until it happens).
pub fn with_stored_left(extra: &str) -> (FakeRegistry, Sluice) {
    let upstream = FakeRegistry::start();
    tree(&upstream);
    // `fresh` is not listed (read-through would fetch it), so no refresh fetches it first.
    upstream.publish("fresh", "1.0.0", &[]);
    let sluice = Sluice::start(
        &upstream,
        "left\n",
        &format!("[upstream]\ntimeout = \"1s\"\n[policy]\nread_through = true\n{extra}"),
    );
    let (status, _) = sluice.get_json("/left");
    assert_eq!(status, 200);
    (upstream, sluice)
}

/// With `faults` on, a document sluice does not hold gets one of the `expected` statuses with
/// a JSON error and is not stored, and `left`, once due, is served stale.
pub fn assert_fault(faults: Faults, expected: &[u16], message: &str, extra: &str) {
    let (upstream, sluice) = with_stored_left(extra);
    upstream.set_faults(faults);
    // Nothing stored: a JSON error, nothing kept.
    let (status, body) = sluice.get_json("/fresh");
    assert!(expected.contains(&status), "{message}: {status} {body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{message}: {body}"
    );
    let registry = sluice.server.as_ref().unwrap().app.clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    assert!(
        runtime
            .block_on(registry.store.packument("fresh"))
            .unwrap()
            .is_none(),
        "{message}: stored"
    );
    // A stored copy that is due for revalidation is served (stale) instead.
    runtime
        .block_on(registry.packuments.mark_stale("left"))
        .unwrap();
    let (status, headers, body) = sluice.get("/left", &[]);
    assert_eq!(status, 200, "{message}");
    assert_eq!(headers["x-cache-status"], "STALE", "{message}");
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(doc["name"], "left", "{message}");
}
