//! Two-factor authentication: TOTP (RFC 6238: SHA-1, 6 digits, 30 s steps, the step before and
//! after accepted, as authenticator apps expect) and recovery codes shown once.
//!
//! An enrollment is one state object in the store (so a fleet shares it): the secret, the
//! sha256 of each unused recovery code, and the last step a code was accepted for — a code is
//! good once, and a recovery code too (both are spent by a conditional put, so two nodes
//! cannot accept the same one). The secret is kept as the store keeps tokens' hashes: only in
//! the store, which only sluice's account reads.

use bytes::Bytes;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};
use totp_rs::{Algorithm, Secret, TOTP};

use super::{sha256_hex, Auth, AuthError, Identity};
use crate::store::{now_ms, Expect, Written};

/// Seconds per step.
const STEP: u64 = 30;
/// Digits per code.
const DIGITS: usize = 6;
/// Steps accepted either side of now (clock drift, a code typed as it turned).
const SKEW: u8 = 1;
/// Recovery codes made at enrollment.
const RECOVERY_CODES: usize = 8;

/// A user's enrollment as the store keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Enrollment {
    /// The shared secret, base32.
    secret: String,
    /// The sha256 (hex) of each recovery code not used yet.
    recovery: Vec<String>,
    /// The last step a code was accepted for (a code is good once).
    last_step: u64,
    /// When the user enrolled (unix ms).
    enrolled: u64,
}

/// What an enrollment shows once: the URI for an authenticator app and the recovery codes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enrolled {
    /// `otpauth://totp/…?secret=…` (a QR code of it is what apps scan).
    pub uri: String,
    /// The secret, base32, for typing into an app by hand.
    pub secret: String,
    /// Codes that each stand in for a one-time code once.
    pub recovery_codes: Vec<String>,
}

/// An enrollment begun and not confirmed, as the store keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    /// The secret offered, base32.
    secret: String,
    /// When it was begun (unix ms).
    begun: u64,
}

/// How long an enrollment begun waits for its confirmation: 1 hour.
const PENDING_LIFETIME_MS: u64 = 3_600_000;

/// An enrollment begun: what an authenticator app needs, shown until it is confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Begun {
    /// `otpauth://totp/…?secret=…` (what a QR code shows apps).
    pub uri: String,
    /// The secret, base32, for typing into an app by hand.
    pub secret: String,
}

fn key(user: &str) -> String {
    format!("auth/2fa/{}", sha256_hex(user))
}

fn pending_key(user: &str) -> String {
    format!("auth/2fa-pending/{}", sha256_hex(user))
}

/// A new shared secret: 160 random bits (RFC 4226's recommendation), base32.
fn new_secret() -> String {
    let mut raw = [0u8; 20];
    OsRng.fill_bytes(&mut raw);
    Secret::Raw(raw.to_vec()).to_encoded().to_string()
}

fn totp(secret: &str, user: &str, issuer: &str) -> Result<TOTP, AuthError> {
    let bytes = Secret::Encoded(secret.to_string())
        .to_bytes()
        .map_err(|e| AuthError::Store(format!("a stored 2FA secret is unreadable: {e:?}")))?;
    TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        SKEW,
        STEP,
        bytes,
        Some(issuer.to_string()),
        user.to_string(),
    )
    .map_err(|e| AuthError::Invalid(format!("cannot make a TOTP for {user}: {e}")))
}

/// A recovery code: ten base32 letters in two groups (50 bits).
fn recovery_code() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut bytes = [0u8; 10];
    OsRng.fill_bytes(&mut bytes);
    let letters: String = bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    format!("{}-{}", &letters[..5], &letters[5..])
}

/// Whether `a` and `b` are equal, in a time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

impl Auth {
    async fn enrollment(
        &self,
        user: &str,
    ) -> Result<Option<(Enrollment, crate::store::Token)>, AuthError> {
        Ok(self
            .store
            .state(&key(user))
            .await?
            .and_then(|(bytes, token)| {
                serde_json::from_slice::<Enrollment>(&bytes)
                    .ok()
                    .map(|e| (e, token))
            }))
    }

    /// Whether `user` enrolled a second factor.
    pub async fn two_factor_enrolled(&self, user: &str) -> Result<bool, AuthError> {
        Ok(self.enrollment(user).await?.is_some())
    }

    /// Enroll `user` (a new secret and recovery codes, replacing any earlier enrollment), by
    /// the user themself or an admin; `issuer` names the registry in authenticator apps.
    pub async fn enroll_two_factor(
        &self,
        by: &Identity,
        user: &str,
        issuer: &str,
    ) -> Result<Enrolled, AuthError> {
        self.may_change_two_factor(by, user)?;
        self.activate(user, &new_secret(), 0, issuer).await
    }

    /// Begin `user`'s enrollment, by the user themself or an admin: a new secret kept aside
    /// until [`Auth::confirm_two_factor`] sees a code of it (an app that scanned it), so a
    /// secret nobody holds never guards the account. Refused while `user` has a second factor:
    /// replacing one must not skip the current code that removing it needs.
    pub async fn begin_two_factor(
        &self,
        by: &Identity,
        user: &str,
        issuer: &str,
    ) -> Result<Begun, AuthError> {
        self.may_change_two_factor(by, user)?;
        if self.two_factor_enrolled(user).await? {
            return Err(AuthError::Conflict(format!(
                "{user} has two-factor authentication already: disable it first"
            )));
        }
        let pending = Pending {
            secret: new_secret(),
            begun: now_ms(),
        };
        let bytes = Bytes::from(serde_json::to_vec(&pending).unwrap_or_default());
        let held = self.store.state(&pending_key(user)).await?;
        let expect = Expect::from_read(held.as_ref().map(|(_, t)| t));
        match self
            .store
            .put_state(&pending_key(user), bytes, expect)
            .await?
        {
            Written::Stored(_) => Ok(Begun {
                uri: totp(&pending.secret, user, issuer)?.get_url(),
                secret: pending.secret,
            }),
            Written::Conflict => Err(AuthError::Conflict(format!(
                "{user}'s two-factor enrollment changed meanwhile: try again"
            ))),
        }
    }

    /// `user`'s enrollment begun and not confirmed yet (nor expired), if any.
    pub async fn pending_two_factor(
        &self,
        user: &str,
        issuer: &str,
    ) -> Result<Option<Begun>, AuthError> {
        let Some((pending, _)) = self.pending(user).await? else {
            return Ok(None);
        };
        Ok(Some(Begun {
            uri: totp(&pending.secret, user, issuer)?.get_url(),
            secret: pending.secret,
        }))
    }

    /// Finish `user`'s enrollment with `code`, a current code of the secret begun: the second
    /// factor is on from now, and its recovery codes are shown once. `None` (and nothing
    /// changes) when the code is not good.
    pub async fn confirm_two_factor(
        &self,
        by: &Identity,
        user: &str,
        code: &str,
        issuer: &str,
    ) -> Result<Option<Enrolled>, AuthError> {
        self.may_change_two_factor(by, user)?;
        if self.two_factor_enrolled(user).await? {
            return Err(AuthError::Conflict(format!(
                "{user} has two-factor authentication already"
            )));
        }
        let Some((pending, token)) = self.pending(user).await? else {
            return Err(AuthError::NotFound(
                "no two-factor enrollment is waiting (or it expired): set it up again".into(),
            ));
        };
        let mut trial = Enrollment {
            secret: pending.secret,
            recovery: Vec::new(),
            last_step: 0,
            enrolled: 0,
        };
        // Digits only: the recovery codes do not exist yet.
        if !code.trim().bytes().all(|b| b.is_ascii_digit())
            || !spend(&mut trial, user, code.trim())?
        {
            return Ok(None);
        }
        // The pending secret is spent first, so two confirmations cannot both activate (and
        // show recovery codes of which only the last would work).
        let spent = self
            .store
            .put_state(
                &pending_key(user),
                Bytes::from_static(b"{}"),
                Expect::Version(token),
            )
            .await?;
        if matches!(spent, Written::Conflict) {
            return Err(AuthError::Conflict(format!(
                "{user}'s two-factor enrollment changed meanwhile: set it up again"
            )));
        }
        // The confirming code's step counts as used: it is not good a second time.
        self.activate(user, &trial.secret, trial.last_step, issuer)
            .await
            .map(Some)
    }

    /// Whether `by` may change `user`'s second factor: the user themself, or an admin.
    fn may_change_two_factor(&self, by: &Identity, user: &str) -> Result<(), AuthError> {
        if by.user != user || by.readonly {
            by.require_admin()?;
        }
        if !self.has_user(user) {
            return Err(AuthError::NotFound(format!(
                "{user} is not a user of this registry"
            )));
        }
        Ok(())
    }

    /// The enrollment begun for `user`, unless it expired.
    async fn pending(
        &self,
        user: &str,
    ) -> Result<Option<(Pending, crate::store::Token)>, AuthError> {
        let held = self.store.state(&pending_key(user)).await?;
        Ok(held.and_then(|(bytes, token)| {
            serde_json::from_slice::<Pending>(&bytes)
                .ok()
                .filter(|p| now_ms().saturating_sub(p.begun) < PENDING_LIFETIME_MS)
                .map(|p| (p, token))
        }))
    }

    /// Make `secret` `user`'s second factor, with new recovery codes; codes of steps up to
    /// `last_step` count as used.
    async fn activate(
        &self,
        user: &str,
        secret: &str,
        last_step: u64,
        issuer: &str,
    ) -> Result<Enrolled, AuthError> {
        let uri = totp(secret, user, issuer)?.get_url();
        let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| recovery_code()).collect();
        let enrollment = Enrollment {
            secret: secret.to_string(),
            recovery: codes.iter().map(|c| sha256_hex(c)).collect(),
            last_step,
            enrolled: now_ms(),
        };
        let bytes = Bytes::from(serde_json::to_vec(&enrollment).unwrap_or_default());
        let held = self.store.state(&key(user)).await?;
        let expect = Expect::from_read(held.as_ref().map(|(_, t)| t));
        match self.store.put_state(&key(user), bytes, expect).await? {
            Written::Stored(_) => Ok(Enrolled {
                uri,
                secret: secret.to_string(),
                recovery_codes: codes,
            }),
            Written::Conflict => Err(AuthError::Conflict(format!(
                "{user}'s second factor changed meanwhile: try again"
            ))),
        }
    }

    /// Take `user`'s second factor away, by the user themself or an admin; whether there was
    /// one.
    pub async fn remove_two_factor(&self, by: &Identity, user: &str) -> Result<bool, AuthError> {
        self.may_change_two_factor(by, user)?;
        let Some((_, token)) = self.enrollment(user).await? else {
            return Ok(false);
        };
        // A tombstone: the store keeps no deletes of state objects.
        let written = self
            .store
            .put_state(
                &key(user),
                Bytes::from_static(b"{}"),
                Expect::Version(token),
            )
            .await?;
        Ok(matches!(written, Written::Stored(_)))
    }

    /// Whether `code` is `user`'s one-time code now, or one of their unused recovery codes;
    /// either is spent by this check. `false` too when `user` has no second factor.
    pub async fn verify_second_factor(&self, user: &str, code: &str) -> Result<bool, AuthError> {
        let code = code.trim();
        for _ in 0..8 {
            let Some((mut enrollment, token)) = self.enrollment(user).await? else {
                return Ok(false);
            };
            if !spend(&mut enrollment, user, code)? {
                return Ok(false);
            }
            let bytes = Bytes::from(serde_json::to_vec(&enrollment).unwrap_or_default());
            match self
                .store
                .put_state(&key(user), bytes, Expect::Version(token))
                .await?
            {
                Written::Stored(_) => return Ok(true),
                // Another check spent something meanwhile: look again (it may be this code).
                Written::Conflict => continue,
            }
        }
        Err(AuthError::Store(
            "the second factor kept changing: try again".into(),
        ))
    }

    /// The check of a write by `who` sent with the one-time code `code` (npm's `npm-otp`
    /// header) from `address`: nothing to check without an enrollment; else the code must be
    /// there and good. A wrong code counts as a failed login.
    pub async fn require_second_factor(
        &self,
        who: &Identity,
        code: Option<&str>,
        address: Option<&str>,
    ) -> Result<(), AuthError> {
        if !self.two_factor_enrolled(&who.user).await? {
            return Ok(());
        }
        let Some(code) = code.map(str::trim).filter(|c| !c.is_empty()) else {
            return Err(AuthError::OtpRequired(format!(
                "{} enrolled two-factor authentication: this needs a one-time code \
                 (npm asks for it, or pass --otp <code>)",
                who.user
            )));
        };
        if self.locked_out(&who.user, address) {
            return Err(AuthError::Locked);
        }
        if self.verify_second_factor(&who.user, code).await? {
            return Ok(());
        }
        self.failed(&who.user, address, "wrong or used one-time code")
            .await;
        Err(AuthError::OtpRequired(
            "this one-time code is wrong or was used already: try the next one".into(),
        ))
    }
}

/// Spend `code` from `enrollment`: a TOTP code of a step after the last one used, or an
/// unused recovery code. Whether it was good.
fn spend(enrollment: &mut Enrollment, user: &str, code: &str) -> Result<bool, AuthError> {
    if code.len() == DIGITS && code.bytes().all(|b| b.is_ascii_digit()) {
        let totp = totp(&enrollment.secret, user, "sluice")?;
        let now = now_ms() / 1000 / STEP;
        let skew = u64::from(SKEW);
        let step = (now.saturating_sub(skew)..=now + skew)
            .filter(|step| *step > enrollment.last_step)
            .find(|step| same(&totp.generate(step * STEP), code));
        return Ok(match step {
            Some(step) => {
                enrollment.last_step = step;
                true
            }
            None => false,
        });
    }
    let hash = sha256_hex(&code.to_ascii_lowercase());
    let before = enrollment.recovery.len();
    enrollment.recovery.retain(|h| !same(h, &hash));
    Ok(enrollment.recovery.len() < before)
}
