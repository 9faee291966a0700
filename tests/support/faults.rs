//! A TCP proxy in front of an HTTP server that injects the faults an S3 server shows under
//! load: `503 SlowDown`, `500 InternalError`, and requests that are never answered.
//!
//! Each faulted request is answered on a connection of its own (`Connection: close`), so the
//! count of faults is the count of requests that got one; switching faults on cuts every
//! connection passing through, so no pooled connection slips past.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// What the proxy does with the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Pass every request through.
    None,
    /// `503 SlowDown` (S3's throttling answer).
    SlowDown,
    /// `500 InternalError`.
    Internal,
    /// Read the request and never answer.
    Stall,
}

#[derive(Default)]
struct State {
    fault: Option<Fault>,
    /// Faulted requests left before passing through again; `None`: until changed.
    budget: Option<u64>,
    passing: Vec<TcpStream>,
    stalled: Vec<TcpStream>,
}

/// The proxy; stops accepting when dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    faulted: Arc<AtomicU64>,
}

impl FaultProxy {
    /// A proxy to `target` (`127.0.0.1:PORT`), passing everything through.
    pub fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let faulted = Arc::new(AtomicU64::new(0));
        let (shared, count, target) = (state.clone(), faulted.clone(), target.to_string());
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let fault = {
                    let mut state = shared.lock().unwrap();
                    match (state.fault, state.budget) {
                        (None | Some(Fault::None), _) => None,
                        (Some(_), Some(0)) => {
                            state.fault = None;
                            None
                        }
                        (Some(fault), budget) => {
                            state.budget = budget.map(|b| b - 1);
                            Some(fault)
                        }
                    }
                };
                match fault {
                    None => {
                        let Ok(server) = TcpStream::connect(&target) else {
                            continue;
                        };
                        {
                            let mut state = shared.lock().unwrap();
                            state.passing.push(client.try_clone().unwrap());
                            state.passing.push(server.try_clone().unwrap());
                        }
                        pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                        pipe(server, client);
                    }
                    Some(fault) => {
                        count.fetch_add(1, Ordering::SeqCst);
                        let shared = shared.clone();
                        thread::spawn(move || answer(client, fault, &shared));
                    }
                }
            }
        });
        Self {
            endpoint,
            state,
            faulted,
        }
    }

    /// Inject `fault` into the next `count` requests (`None`: until [`FaultProxy::heal`]).
    pub fn inject(&self, fault: Fault, count: Option<u64>) {
        let mut state = self.state.lock().unwrap();
        state.fault = Some(fault);
        state.budget = count;
        for stream in state.passing.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Pass everything through again (and cut the requests left hanging).
    pub fn heal(&self) {
        let mut state = self.state.lock().unwrap();
        state.fault = None;
        state.budget = None;
        for stream in state.stalled.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// How many requests got a fault so far.
    pub fn faulted(&self) -> u64 {
        self.faulted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.heal();
        let _ = TcpStream::connect(self.endpoint.trim_start_matches("http://"));
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// Read one request (head and `Content-Length` body) and answer it with `fault`.
fn answer(mut client: TcpStream, fault: Fault, state: &Mutex<State>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let _ = std::io::copy(&mut (&client).take(length), &mut std::io::sink());
    let (status, code) = match fault {
        Fault::SlowDown => ("503 Slow Down", "SlowDown"),
        Fault::Internal => ("500 Internal Server Error", "InternalError"),
        Fault::Stall => {
            state.lock().unwrap().stalled.push(client);
            return;
        }
        Fault::None => unreachable!("passed through"),
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>injected</Message></Error>"
    );
    let _ = write!(
        client,
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
}
