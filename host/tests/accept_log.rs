//! Issue 11, point 2: out of file descriptors, a failed accept is retried every 50 ms; its log
//! line must not repeat at that rate. This test lowers its own process's open-file limit, so
//! it is the only test in this file (its own process).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Log lines written by the subscriber, shared with the test.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn accept_failures_are_logged_once_per_interval_with_a_count() {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _logs = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let failures = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Clients waiting in the backlog: every accept has one to take.
        let _clients: Vec<std::net::TcpStream> = (0..4)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        // No descriptor left for accept: a low limit, and every number under it taken.
        let saved = getrlimit(Resource::Nofile);
        let open = u64::try_from(std::fs::read_dir("/proc/self/fd").unwrap().count()).unwrap();
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(open + 8),
                maximum: saved.maximum,
            },
        )
        .unwrap();
        let mut fill = Vec::new();
        while let Ok(f) = std::fs::File::open("/dev/null") {
            fill.push(f);
        }
        let mut failures = 0u32;
        let accepted = tokio::time::timeout(
            Duration::from_millis(5600),
            sigil_host::net::accept_or(&listener, || failures += 1),
        )
        .await;
        assert!(accepted.is_err(), "an accept succeeded with no descriptor");
        drop(fill);
        setrlimit(Resource::Nofile, saved).unwrap();
        failures
    });
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let logged: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("accept failed"))
        .collect();
    // ~100 failures in 5.6 s: one line at the first, one 5 s later with the count held back.
    assert!(failures >= 50, "{failures} failures");
    assert_eq!(logged.len(), 2, "{failures} failures, logged:\n{text}");
    let held_back: u32 = logged[1]
        .split_whitespace()
        .find_map(|f| f.strip_prefix("held_back="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {}", logged[1]));
    assert!(held_back >= 40, "{}", logged[1]);
    std::io::stderr().write_all(text.as_bytes()).unwrap();
}
