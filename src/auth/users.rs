//! The users file: one `name:<argon2id PHC string>[:<email>[:admin]]` a line, edited by an admin
//! or by `sluice user add|passwd|remove`, hot-reloaded; and password checks against it and the
//! users kept in the store ([`super::directory`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand_core::OsRng;
use sluice_plugin_api::live::{self, LiveFile, Watched};

use super::{sha256_hex, Auth};

/// A user of the users file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The password's argon2id PHC string.
    pub hash: String,
    /// The e-mail address shown beside the name in a package's maintainers (may be empty).
    pub email: String,
    /// Whether the user administers the registry (the console's admin pages): a fourth field
    /// `admin` on the line.
    pub admin: bool,
}

/// The users file's users, by name.
pub type Users = BTreeMap<String, User>;

/// Whether `email` can be kept in the users file (one line, no `:`).
pub fn valid_email(email: &str) -> bool {
    email.len() <= 254 && !email.contains([':', '\n', '\r']) && email.trim() == email
}

fn parse_users(text: &str) -> live::Parsed<Users> {
    let mut value = Users::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_start_matches('\u{feff}').trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // A PHC string has no `:`, so what follows a second one is the e-mail address, and
        // what follows a third the role (older files have neither).
        let parsed = line.split_once(':').and_then(|(name, rest)| {
            let mut fields = rest.splitn(3, ':');
            let hash = fields.next().unwrap_or("");
            let email = fields.next().unwrap_or("");
            let admin = match fields.next().map(str::trim) {
                None | Some("") => false,
                Some("admin") => true,
                Some(_) => return None,
            };
            let ok = !name.is_empty() && PasswordHash::new(hash).is_ok();
            ok.then(|| {
                let user = User {
                    hash: hash.to_string(),
                    email: email.trim().to_string(),
                    admin,
                };
                (name.to_string(), user)
            })
        });
        match parsed {
            Some((name, user)) => {
                value.insert(name, user);
            }
            None => errors.push(live::LineError {
                line: i + 1,
                message: "not `name:<argon2id PHC string>[:<email>[:admin]]` (edit it with \
                          `sluice user`)"
                    .into(),
            }),
        }
    }
    live::Parsed { value, errors }
}

/// Hash `password` for the users file.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Load the users file at `path`; a missing one means no users yet (it is read once it
/// appears, e.g. after `sluice user add`).
pub fn load_users(path: &Path) -> Result<LiveFile<Users>, String> {
    if !path.exists() {
        return Ok(LiveFile::from_text(
            path,
            "users file",
            "",
            parse_users,
            BTreeMap::is_empty,
        ));
    }
    LiveFile::load(path, "users file", false, parse_users, BTreeMap::is_empty)
}

/// The users file as the host watches it: missing is no users yet, not a failure to report.
struct UsersFile(Arc<LiveFile<Users>>);

impl Watched for UsersFile {
    fn path(&self) -> &Path {
        self.0.path()
    }

    fn reread(&self, confirm_empty: bool) -> sluice_plugin_api::watch::Reread {
        if !self.0.path().exists() {
            return sluice_plugin_api::watch::Reread::Done;
        }
        self.0.reread(confirm_empty)
    }
}

impl Auth {
    /// The users file, for the host to watch (a file that does not exist yet is no news).
    pub fn watched(&self) -> Arc<dyn Watched> {
        Arc::new(UsersFile(self.users.clone()))
    }

    /// Whether `password` is `user`'s, as the users file and the store say now.
    pub fn check_password(&self, user: &str, password: &str) -> bool {
        let account = if self.has_user(user) {
            self.account(user)
        } else {
            None
        };
        let Some(hash) = account.map(|u| u.hash) else {
            // As slow as a wrong password: a probe does not learn which names exist.
            let _ = hash_password(password);
            return false;
        };
        // Keyed by the stored hash too: once a new one is kept (`sluice user passwd`, a reset),
        // a password verified against the old one is verified again, and fails.
        let key = sha256_hex(&format!("{user}\n{hash}\n{password}"));
        if self.verified.contains_key(&key) {
            return true;
        }
        let ok = PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false);
        if ok {
            self.verified.insert(key, ());
        }
        ok
    }

    /// `user` as the users file and the store's users together say: the store's password,
    /// e-mail address and role (set from the console, shared by a fleet) over the file's.
    pub(super) fn account(&self, user: &str) -> Option<User> {
        let file = self.users.current().get(user).cloned();
        let stored = self.stored().get(user).cloned();
        let Some(stored) = stored else {
            return file;
        };
        let hash = stored.hash.or(file.as_ref().map(|f| f.hash.clone()))?;
        Some(User {
            hash,
            email: stored
                .email
                .or(file.as_ref().map(|f| f.email.clone()))
                .unwrap_or_default(),
            admin: stored
                .admin
                .unwrap_or(file.as_ref().is_some_and(|f| f.admin)),
        })
    }

    /// Whether `user` is a user (of the users file or the store). An unknown name makes the
    /// file be read again first, so a `sluice user add` counts at once, before the watcher
    /// notices.
    pub fn has_user(&self, user: &str) -> bool {
        if self.account(user).is_some() {
            return true;
        }
        let _ = self.users.reload(false);
        self.account(user).is_some()
    }

    /// A fingerprint of `user`'s password as kept now (a digest of its hash), or `None` for no
    /// such user: a console session opened under another fingerprint (the password was reset,
    /// the user removed) is no longer good.
    pub fn credential(&self, user: &str) -> Option<String> {
        if !self.has_user(user) {
            return None;
        }
        self.account(user)
            .map(|u| sha256_hex(&format!("session\n{}", u.hash)))
    }

    /// Whether `user` administers the registry (the file's role, or one granted in the store).
    pub fn is_admin(&self, user: &str) -> bool {
        self.account(user).is_some_and(|u| u.admin)
    }

    /// `user`'s e-mail address ("" when none is known), or `None` for no such user.
    pub fn email(&self, user: &str) -> Option<String> {
        if !self.has_user(user) {
            return None;
        }
        self.account(user).map(|u| u.email)
    }

    /// Add `user` with `password` (and `email`, possibly empty) to the users file (adduser).
    pub fn add_user(&self, user: &str, password: &str, email: &str) -> Result<(), String> {
        edit_users(self.users.path(), |users| {
            if users.contains_key(user) {
                return Err(format!("{user} exists already"));
            }
            let user_entry = User {
                hash: hash_password(password)?,
                email: email.to_string(),
                admin: false,
            };
            users.insert(user.to_string(), user_entry);
            Ok(())
        })?;
        self.users.reload(true).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The users file's users now.
    pub(super) fn file_users(&self) -> Arc<Users> {
        let _ = self.users.reload(false);
        self.users.current()
    }
}

/// Whether `name` can be a user name (in the users file's lines and in npm's URLs).
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 214
        && !name.contains([':', '\n', '\r', ' ', '/', '\t'])
        && name.trim() == name
}

/// `user`'s line in the users file.
fn user_line(name: &str, user: &User) -> String {
    match (user.email.is_empty(), user.admin) {
        (true, false) => format!("{name}:{}\n", user.hash),
        (false, false) => format!("{name}:{}:{}\n", user.hash, user.email),
        (_, true) => format!("{name}:{}:{}:admin\n", user.hash, user.email),
    }
}

/// Change the users file at `path` with `edit`, keeping comments and other lines.
pub fn edit_users(
    path: &Path,
    edit: impl FnOnce(&mut Users) -> Result<(), String>,
) -> Result<(), String> {
    // Only a missing file is no users: one that cannot be read must not be rewritten as empty.
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let parsed = parse_users(&text);
    if let Some(error) = parsed.errors.first() {
        return Err(format!(
            "{}:{}: {}",
            path.display(),
            error.line,
            error.message
        ));
    }
    let before = parsed.value.clone();
    let mut users = parsed.value;
    edit(&mut users)?;
    let mut out = String::new();
    for line in text.lines() {
        let name = line.split_once(':').map(|(n, _)| n.trim());
        match name {
            Some(name) if !line.trim_start().starts_with('#') && before.contains_key(name) => {
                if let Some(user) = users.remove(name) {
                    out.push_str(&user_line(name, &user));
                }
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    // What is left was not in the file: new users.
    for (name, user) in users {
        out.push_str(&user_line(&name, &user));
    }
    let temp = path.with_extension("sluice-tmp");
    write_owner_only(&temp, &out).map_err(|e| format!("{}: {e}", temp.display()))?;
    std::fs::rename(&temp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Write `text` to a new file at `path` that only its owner may read: it holds password
/// hashes, which can be guessed at offline.
fn write_owner_only(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    // A file left by an interrupted edit would keep its mode: start afresh.
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// A warning when the users file at `path` is open to group or others (it holds password
/// hashes, and whoever can write it can add a user); `None` when it is not, or is missing.
pub fn users_file_exposed(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then(|| {
            format!(
                "the users file {0} is open to group or others (mode {mode:04o}): it holds \
                 password hashes; chmod 600 {0}",
                path.display()
            )
        })
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}
