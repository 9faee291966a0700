//! Tokens: 256 random bits, shown once and kept only as their sha256 in the store's state
//! objects (so a fleet shares them), each with its owner, read-only flag and networks.

use bytes::Bytes;
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};

use super::{sha256_hex, Auth, AuthError};
use crate::store::{now_ms, Expect, Written};

/// A stored token: everything but the token itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The short id `npm token list` shows and `npm token revoke` takes.
    pub id: String,
    /// The sha256 of the token (hex).
    pub hash: String,
    /// Whose it is.
    pub user: String,
    /// When it was made (unix ms).
    pub created: u64,
    /// Whether it may only read.
    pub readonly: bool,
    /// The networks it may be used from (empty: any).
    #[serde(default)]
    pub cidr_whitelist: Vec<String>,
}

/// A new random token (256 bits).
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sluice_{hex}")
}

fn token_key(hash: &str) -> String {
    format!("tokens/by-hash/{hash}")
}

fn user_key(user: &str) -> String {
    format!("tokens/by-user/{}", sha256_hex(user))
}

/// Whether `address` is in one of the networks `cidrs` names (`10.0.0.0/8`, `::1/128`, or a
/// bare address); unparsable entries match nothing.
pub fn address_allowed(cidrs: &[String], address: Option<std::net::IpAddr>) -> bool {
    let Some(address) = address else {
        return false;
    };
    cidrs.iter().any(|cidr| match parse_cidr(cidr) {
        Ok(net) => net.contains(&address),
        Err(_) => false,
    })
}

/// A network as `npm token create --cidr` gives it.
pub fn parse_cidr(cidr: &str) -> Result<ipnet::IpNet, String> {
    let cidr = cidr.trim();
    cidr.parse::<ipnet::IpNet>()
        .or_else(|_| cidr.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{cidr}` is not a network (10.0.0.0/8, fd00::/8, or an address)"))
}

impl Auth {
    /// The stored token `token`, if it is one (a revoked one is not).
    pub(super) async fn token(&self, token: &str) -> Result<Option<TokenInfo>, AuthError> {
        let hash = sha256_hex(token);
        if let Some(seen) = self.seen.get(&hash) {
            return Ok(seen);
        }
        let info = self
            .store
            .state(&token_key(&hash))
            .await?
            .and_then(|(bytes, _)| serde_json::from_slice::<TokenInfo>(&bytes).ok())
            .filter(|info| info.hash == hash);
        self.seen.insert(hash, info.clone());
        Ok(info)
    }

    /// A new token for `user`, shown once; only its hash is kept.
    pub async fn create_token(
        &self,
        user: &str,
        readonly: bool,
        cidr_whitelist: Vec<String>,
    ) -> Result<(String, TokenInfo), AuthError> {
        let token = new_token();
        let hash = sha256_hex(&token);
        let info = TokenInfo {
            id: hash[..8].to_string(),
            hash: hash.clone(),
            user: user.to_string(),
            created: now_ms(),
            readonly,
            cidr_whitelist,
        };
        let bytes = Bytes::from(serde_json::to_vec(&info).unwrap_or_default());
        match self
            .store
            .put_state(&token_key(&hash), bytes, Expect::Absent)
            .await?
        {
            Written::Stored(_) => {}
            Written::Conflict => return Err(AuthError::Store("token collision: try again".into())),
        }
        self.edit_list(user, |list| list.push(info.clone())).await?;
        Ok((token, info))
    }

    /// `user`'s tokens.
    pub async fn tokens(&self, user: &str) -> Result<Vec<TokenInfo>, AuthError> {
        Ok(self
            .store
            .state(&user_key(user))
            .await?
            .and_then(|(bytes, _)| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default())
    }

    async fn edit_list(
        &self,
        user: &str,
        mut edit: impl FnMut(&mut Vec<TokenInfo>),
    ) -> Result<(), AuthError> {
        for _ in 0..32 {
            let held = self.store.state(&user_key(user)).await?;
            let mut list: Vec<TokenInfo> = held
                .as_ref()
                .and_then(|(b, _)| serde_json::from_slice(b).ok())
                .unwrap_or_default();
            edit(&mut list);
            let bytes = Bytes::from(serde_json::to_vec(&list).unwrap_or_default());
            let expect = Expect::from_read(held.as_ref().map(|(_, t)| t));
            if let Written::Stored(_) = self.store.put_state(&user_key(user), bytes, expect).await?
            {
                return Ok(());
            }
        }
        Err(AuthError::Store(
            "the token list kept changing: try again".into(),
        ))
    }

    /// Revoke `user`'s token with id (or hash, or the token itself) `id`; returns whether there
    /// was one.
    pub async fn revoke(&self, user: &str, id: &str) -> Result<bool, AuthError> {
        let by_token = sha256_hex(id);
        let found = self
            .tokens(user)
            .await?
            .into_iter()
            .find(|t| t.id == id || t.hash == id || t.hash == by_token);
        let Some(found) = found else {
            return Ok(false);
        };
        // A revoked token is a tombstone: unknown from now on.
        let tombstone = Bytes::from_static(b"{}");
        let key = token_key(&found.hash);
        if let Some((_, token)) = self.store.state(&key).await? {
            self.store
                .put_state(&key, tombstone, Expect::Version(token))
                .await?;
        }
        self.seen.insert(found.hash.clone(), None);
        self.edit_list(user, |list| list.retain(|t| t.hash != found.hash))
            .await?;
        Ok(true)
    }
}
