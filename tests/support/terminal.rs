//! What a person at a terminal has: npm run in a pseudo-terminal (npm asks for a one-time
//! password only when its input and output are a terminal), and an authenticator app to read
//! codes from.

use std::ffi::OsString;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rexpect::session::{spawn_with_options, Options, PtySession};

use super::Project;

/// How long a prompt or npm's end may take (generous: CI machines are slow).
const PATIENCE_MS: u64 = 120_000;

/// Seconds per TOTP step (RFC 6238, as sluice and every app use).
const STEP: u64 = 30;

/// An authenticator app holding one enrollment's secret.
pub struct Authenticator {
    totp: totp_rs::TOTP,
    /// The last step a code was read for: sluice takes each step's code once.
    last: u64,
}

fn now_step() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        / STEP
}

impl Authenticator {
    /// The app after scanning `uri` (`otpauth://totp/…?secret=…`).
    pub fn scan(uri: &str) -> Authenticator {
        Authenticator {
            totp: totp_rs::TOTP::from_url(uri).expect("an otpauth URI"),
            last: 0,
        }
    }

    /// A code sluice takes now: this step's, or the next one's when this step's was read
    /// already (sluice takes a step either side of its own). A third code within one step
    /// waits for the clock to reach the step before the one it is for.
    pub fn code(&mut self) -> String {
        let step = now_step().max(self.last + 1);
        while now_step() + 1 < step {
            std::thread::sleep(Duration::from_millis(200));
        }
        self.last = step;
        self.totp.generate(step * STEP)
    }

    /// A six-digit code that is none that sluice would take now.
    pub fn wrong_code(&self) -> String {
        let now = now_step();
        let good: Vec<String> = (now.saturating_sub(1)..=now + 2)
            .map(|step| self.totp.generate(step * STEP))
            .collect();
        (0..10)
            .map(|d| format!("{d}{d}{d}{d}{d}{d}"))
            .find(|code| !good.contains(code))
            .unwrap_or_default()
    }
}

impl Project {
    /// npm with `args` against `registry` in a pseudo-terminal, with this project's cache and
    /// user config, and `path` as `$PATH` when given (Node 24's npm 12).
    pub fn npm_in_terminal(
        &self,
        registry: &str,
        args: &[&str],
        path: Option<&OsString>,
    ) -> Terminal {
        let mut command: Command = self.npm_command(registry, args);
        if let Some(path) = path {
            command.env("PATH", path);
        }
        let options = Options::new()
            .timeout_ms(Some(PATIENCE_MS))
            .strip_ansi_escape_codes(true);
        Terminal {
            session: spawn_with_options(command, options).expect("npm starts in a terminal"),
            said: String::new(),
        }
    }
}

/// A program running in a pseudo-terminal, and all it printed so far.
pub struct Terminal {
    session: PtySession,
    said: String,
}

impl Terminal {
    /// Wait until the program prints `prompt` (a panic with all it said if it ends first).
    pub fn expect(&mut self, prompt: &str) {
        match self.session.exp_string(prompt) {
            Ok(before) => {
                self.said.push_str(&before);
                self.said.push_str(prompt);
            }
            Err(error) => panic!(
                "never prompted {prompt:?} ({error}); it said:\n{}",
                self.said
            ),
        }
    }

    /// Type `line` and Enter.
    pub fn type_line(&mut self, line: &str) {
        self.session
            .send_line(line)
            .expect("the terminal takes input");
    }

    /// Wait for the program's end; all it printed, or a panic with it if it failed.
    pub fn succeeds(mut self) -> String {
        let rest = self.session.exp_eof().unwrap_or_default();
        self.said.push_str(&rest);
        let status = self.session.process().wait().expect("the program ends");
        assert!(
            matches!(status, rexpect::process::WaitStatus::Exited(_, 0)),
            "{status:?}; it said:\n{}",
            self.said
        );
        self.said
    }
}
