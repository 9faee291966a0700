//! The sluice command line: serve | check | add-package | remove-package | mirror | verify |
//! migrate | user | settings | audit-log | reindex.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice::app::App;
use sluice::config::Config;

/// A private npm registry mirror: whitelist, read-through cache, full mirror.
#[derive(Parser)]
#[command(name = "sluice", version, about)]
struct Cli {
    /// The configuration file (default: conf/sluice.toml, else the embedded default).
    #[arg(long, short, global = true, env = "SLUICE_CONFIG")]
    config: Option<PathBuf>,
    /// Log format (default: `[log] format` of the configuration, else text).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry server.
    Serve,
    /// Validate the configuration and print the effective one; warn when the users file is
    /// open to other accounts.
    Check,
    /// Put packages and their whole dependency closure on the whitelist and mirror them; or,
    /// with --lockfile, exactly the versions lockfiles name.
    #[command(name = "add-package")]
    AddPackage {
        /// Package specs: `express`, `react@^18`, `@types/node@20`, `name@tag`.
        #[arg(required_unless_present = "lockfile")]
        specs: Vec<String>,
        /// Lockfiles (or folders holding one): package-lock.json, npm-shrinkwrap.json,
        /// yarn.lock (v1, berry), pnpm-lock.yaml, bun.lock.
        #[arg(long, num_args = 1..)]
        lockfile: Vec<PathBuf>,
        /// Follow the dependencies of every version, not only the selected one's.
        #[arg(long)]
        all_versions: bool,
        /// Upstream requests at once (default: upstream.concurrency).
        #[arg(long, short = 'j')]
        concurrency: Option<usize>,
    },
    /// Mirror mode: follow the replication feed from the checkpoint to its head.
    Mirror {
        /// Catch up once and exit (the only way for now; `serve` follows continuously).
        #[arg(long)]
        once: bool,
    },
    /// Check every stored entry's integrity; drop corrupt ones (refetched on demand).
    ///
    /// Exits non-zero when it found any.
    Verify,
    /// Rebuild the search index from the store (with a server running, the server rebuilds it
    /// and swaps it in when done; searches go on from the old one meanwhile).
    Reindex,
    /// Copy this store (packuments, tarballs, checkpoint, shared state) into the store another
    /// configuration names: disk to s3 and back. Resumable: run it again after an interruption.
    Migrate {
        /// The configuration whose `[storage]` is the destination.
        #[arg(long)]
        to: PathBuf,
        /// Packages copied at once (default: upstream.concurrency).
        #[arg(long, short = 'j')]
        concurrency: Option<usize>,
    },
    /// Lockfile workflows.
    Lockfile {
        #[command(subcommand)]
        action: LockfileAction,
    },
    /// Manage the users of private packages (the `auth.users` file).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Take packages off the whitelist (the store keeps their data).
    #[command(name = "remove-package")]
    RemovePackage {
        /// Package names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// The live settings (read_through, mode, refresh): kept in the store, over the file's,
    /// followed by every node within cluster.sync. Without an action: each one's value and
    /// where it comes from.
    Settings {
        #[command(subcommand)]
        action: Option<SettingsAction>,
    },
    /// Print the audit log of writes and admin actions, oldest first.
    #[command(name = "audit-log")]
    AuditLog {
        /// Only entries since then: an RFC 3339 time (2025-01-31T12:00:00Z) or an age (2h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// One JSON object a line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SettingsAction {
    /// Set a live setting: read_through on|off, mode whitelist|mirror, refresh 10m.
    Set {
        /// read_through, mode or refresh.
        key: String,
        /// The new value.
        value: String,
    },
    /// Drop a live setting's value: the configuration file's is in force again.
    Unset {
        /// read_through, mode or refresh.
        key: String,
    },
}

#[derive(Subcommand)]
enum LockfileAction {
    /// Point every registry tarball URL of the lockfiles at server.public_url (in place;
    /// everything else stays byte for byte).
    Rewrite {
        /// package-lock.json, npm-shrinkwrap.json, yarn.lock, pnpm-lock.yaml, bun.lock…
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Change nothing; list file:line of each URL that bypasses sluice and exit non-zero
        /// when there is one (for CI).
        #[arg(long)]
        check: bool,
    },
}

fn lockfile(config: &Config, action: LockfileAction) -> anyhow::Result<ExitCode> {
    let LockfileAction::Rewrite { files, check } = action;
    let public_url = reqwest::Url::parse(&config.server.public_url)?;
    let mut bypassing = 0;
    for file in &files {
        let found = sluice::jobs::lockfile::rewrite_file(file, &public_url, check)
            .map_err(anyhow::Error::msg)?;
        if check {
            for bypass in &found {
                println!("{}:{}: {}", file.display(), bypass.line, bypass.url);
            }
        } else if !found.is_empty() {
            println!(
                "{}: {} URLs now point at {public_url}",
                file.display(),
                found.len()
            );
        } else {
            println!(
                "{}: every registry URL already points at {public_url}",
                file.display()
            );
        }
        bypassing += found.len();
    }
    if check && bypassing > 0 {
        eprintln!("{bypassing} URLs bypass sluice: run `sluice lockfile rewrite` on these files");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
enum UserAction {
    /// Add a user (prompts for the password).
    Add {
        /// The user name.
        name: String,
        /// Read the password from standard input (for scripts).
        #[arg(long)]
        password_stdin: bool,
        /// The e-mail address shown beside the name in the maintainers of packages.
        #[arg(long, default_value = "")]
        email: String,
        /// Make the user an admin (the console's admin pages).
        #[arg(long)]
        admin: bool,
    },
    /// List the users (of the users file and the store) with their roles.
    List,
    /// Grant a user the admin role (kept in the store), or take it back with --revoke.
    Admin {
        /// The user name.
        name: String,
        /// Take the role back.
        #[arg(long)]
        revoke: bool,
    },
    /// Enroll a user in two-factor authentication: prints the otpauth:// URI for an
    /// authenticator app and recovery codes (shown once); --remove takes it away.
    #[command(name = "2fa")]
    TwoFactor {
        /// The user name.
        name: String,
        /// Remove the user's second factor instead.
        #[arg(long)]
        remove: bool,
    },
    /// Change a user's password.
    Passwd {
        /// The user name.
        name: String,
        /// Read the password from standard input (for scripts).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a user (their tokens stop working).
    Remove {
        /// The user name.
        name: String,
    },
}

/// The password for `name`: from standard input, or asked for twice on the terminal.
fn read_password(name: &str, from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        let password = line.trim_end_matches(['\r', '\n']).to_string();
        anyhow::ensure!(!password.is_empty(), "no password on standard input");
        return Ok(password);
    }
    let first = rpassword::prompt_password(format!("password for {name}: "))?;
    let again = rpassword::prompt_password("again: ")?;
    anyhow::ensure!(first == again, "the two passwords differ");
    anyhow::ensure!(!first.is_empty(), "an empty password is not a password");
    Ok(first)
}

fn user(config: &Config, action: UserAction) -> anyhow::Result<ExitCode> {
    use sluice::auth::{edit_users, hash_password};
    let path = &config.auth.users;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    // A missing file is created by the edit, owner-only (it holds password hashes).
    let shown = path.display().to_string();
    match action {
        UserAction::Add {
            name,
            password_stdin,
            email,
            admin,
        } => {
            anyhow::ensure!(
                sluice::auth::valid_user_name(&name),
                "`{name}` is not a user name"
            );
            anyhow::ensure!(
                sluice::auth::valid_email(&email),
                "`{email}` is not an e-mail address the users file can keep (one line, no `:`)"
            );
            let password = read_password(&name, password_stdin)?;
            let hash = hash_password(&password).map_err(anyhow::Error::msg)?;
            edit_users(path, |users| {
                if users.contains_key(&name) {
                    return Err(format!(
                        "{name} is a user already (sluice user passwd {name})"
                    ));
                }
                users.insert(name.clone(), sluice::auth::User { hash, email, admin });
                Ok(())
            })
            .map_err(anyhow::Error::msg)?;
            let role = if admin { " as an admin" } else { "" };
            println!("added {name} to {shown}{role}");
        }
        UserAction::List | UserAction::Admin { .. } | UserAction::TwoFactor { .. } => {
            return stored_user(config.clone(), action);
        }
        UserAction::Passwd {
            name,
            password_stdin,
        } => {
            let password = read_password(&name, password_stdin)?;
            if password_in_store(config, &name, &password)? {
                println!("changed the password of {name} in the store");
                return Ok(ExitCode::SUCCESS);
            }
            let hash = hash_password(&password).map_err(anyhow::Error::msg)?;
            edit_users(path, |users| match users.get_mut(&name) {
                Some(old) => {
                    old.hash = hash;
                    Ok(())
                }
                None => Err(format!("{name} is not a user (sluice user add {name})")),
            })
            .map_err(anyhow::Error::msg)?;
            println!("changed the password of {name} in {shown}");
        }
        UserAction::Remove { name } => {
            let in_store = remove_from_store(config, &name)?;
            let in_file = edit_users(path, |users| match users.remove(&name) {
                Some(_) => Ok(()),
                None => Err(format!("{name} is not a user")),
            });
            match (in_file, in_store) {
                (Ok(()), _) => println!("removed {name} from {shown}"),
                (Err(_), true) => println!("removed {name} from the store"),
                (Err(e), false) => anyhow::bail!(e),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Logs: the level from `RUST_LOG`, else the configuration's `[log] level`. Lines go to
/// standard error through a buffered writer on a thread of its own (a request never waits for
/// a write); the returned guard flushes what is queued when it is dropped, at exit.
fn init_logs(format: LogFormat, level: &str) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("sluice-log")
        .finish(std::io::BufWriter::with_capacity(
            64 << 10,
            std::io::stderr(),
        ));
    // Colour codes only for a terminal: a log file or journal gets plain lines.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    guard
}

/// jemalloc, for its per-thread cache of the blocks every request allocates (Cargo.toml says
/// what it saved). Freed pages go back to the system after its decay time, or at once in
/// `sluice::memory::release_freed_memory`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("sluice: {error}");
            return ExitCode::FAILURE;
        }
    };
    let format = cli.log_format.unwrap_or(if config.log.json {
        LogFormat::Json
    } else {
        LogFormat::Text
    });
    let _flushed_at_exit = init_logs(format, &config.log.level);
    match run(cli, config) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("sluice: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, config: Config) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check => {
            sluice::plugins::Host::build(&config)?;
            print!("{config}");
            print_live_settings(config.clone());
            for note in config.publish.notes() {
                eprintln!("sluice: note: {note}");
            }
            if let Some(warning) = sluice::auth::users_file_exposed(&config.auth.users) {
                eprintln!("sluice: warning: {warning}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::AddPackage {
            specs,
            lockfile,
            all_versions,
            concurrency,
        } => add_package(config, &specs, &lockfile, all_versions, concurrency),
        Command::Mirror { once } => mirror(config, once),
        Command::Verify => verify(config),
        Command::Reindex => reindex(config),
        Command::RemovePackage { names } => remove_packages(config, &names),
        Command::Migrate { to, concurrency } => migrate(config, &to, concurrency),
        Command::User { action } => user(&config, action),
        Command::Settings { action } => settings(config, action),
        Command::AuditLog { since, json } => audit_log(config, since.as_deref(), json),
        Command::Lockfile { action } => lockfile(&config, action),
        Command::Serve => {
            sluice::server::serve(App::build(config)?)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn add_package(
    config: Config,
    specs: &[String],
    lockfiles: &[PathBuf],
    all_versions: bool,
    concurrency: Option<usize>,
) -> anyhow::Result<ExitCode> {
    use sluice::jobs::closure::{add_locked, add_packages, parse_spec, AddOptions};
    use std::io::IsTerminal;

    let wants = specs
        .iter()
        .map(|s| parse_spec(s).map_err(|e| anyhow::anyhow!("`{s}`: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut locked = Vec::new();
    for path in lockfiles {
        let file = sluice::jobs::lockfile::read::find(path).map_err(anyhow::Error::msg)?;
        let read = sluice::jobs::lockfile::read::read(&file).map_err(anyhow::Error::msg)?;
        for skipped in &read.skipped {
            eprintln!(
                "{}: skipped (not a registry package): {skipped}",
                file.display()
            );
        }
        eprintln!(
            "{}: {} locked registry packages",
            file.display(),
            read.packages.len()
        );
        locked.extend(read.packages);
    }
    let options = AddOptions {
        all_versions,
        concurrency: concurrency.unwrap_or(config.upstream.concurrency).max(1),
        progress: std::io::stderr().is_terminal(),
        watch: None,
    };
    let app = App::build(config)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let summary = runtime.block_on(async {
        let mut summary = if wants.is_empty() {
            sluice::jobs::closure::Summary::default()
        } else {
            add_packages(&app, wants, &options).await
        };
        if !locked.is_empty() {
            let more = add_locked(&app, locked, &options).await;
            summary.names.extend(more.names);
            summary.added.extend(more.added);
            summary.versions += more.versions;
            summary.tarballs += more.tarballs;
            summary.bytes += more.bytes;
            summary.failures.extend(more.failures);
            summary.elapsed += more.elapsed;
        }
        summary
    });
    let whitelist = app
        .whitelist()
        .map(|l| l.path().display().to_string())
        .unwrap_or_else(|| "(mirror mode: no whitelist)".into());
    println!(
        "{} packages in the closure, {} added to {whitelist}{}",
        summary.names.len(),
        summary.added.len(),
        if summary.added.is_empty() {
            String::new()
        } else {
            format!(": {}", summary.added.join(", "))
        }
    );
    println!(
        "{} versions, {} tarballs stored ({:.1} MB) in {:.1}s",
        summary.versions,
        summary.tarballs,
        summary.bytes as f64 / 1e6,
        summary.elapsed.as_secs_f64()
    );
    if summary.failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for failure in &summary.failures {
            eprintln!("failed: {failure}");
        }
        Ok(ExitCode::FAILURE)
    }
}

fn migrate(
    config: Config,
    to: &std::path::Path,
    concurrency: Option<usize>,
) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    let target = Config::load_file(to)?;
    // The canonical stores, without a node's local tier: that tier is not what is migrated,
    // and may even be the other store's folder.
    let from = sluice::store::open_canonical(&config)?;
    let into = sluice::store::open_canonical(&target)?;
    if sluice::jobs::migrate::same_store(from.as_ref(), into.as_ref()) {
        anyhow::bail!(
            "{} and {} name the same store ({})",
            config.source,
            target.source,
            from.location()
        );
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let concurrency = concurrency.unwrap_or(config.upstream.concurrency);
    let done = runtime.block_on(sluice::jobs::migrate::migrate(
        &from,
        &into,
        concurrency,
        std::io::stderr().is_terminal(),
    ))?;
    println!(
        "{} -> {}: {} packuments written, {} already there; {} tarballs copied and verified ({:.1} MB), {} already there; {} staged versions listed; {} state objects; in {:.1}s",
        from.location(),
        into.location(),
        done.packuments,
        done.packuments_kept,
        done.tarballs,
        done.bytes as f64 / 1e6,
        done.tarballs_kept,
        done.staged,
        done.state,
        done.elapsed.as_secs_f64()
    );
    if done.failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for failure in &done.failures {
        eprintln!("failed: {failure}");
    }
    eprintln!("run it again to retry what failed (what was copied is kept)");
    Ok(ExitCode::FAILURE)
}

/// Take `names` off the whitelist file, and in a fleet off the shared list too.
fn remove_packages(config: Config, names: &[String]) -> anyhow::Result<ExitCode> {
    if config.policy.mode != sluice::config::Mode::Whitelist {
        anyhow::bail!("policy.mode is \"mirror\": there is no whitelist to edit");
    }
    let app = App::build(config)?;
    let Some(list) = app.whitelist() else {
        anyhow::bail!("there is no whitelist to edit");
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let mut code = ExitCode::SUCCESS;
    for name in names {
        let from_file = list.remove(name)?;
        let shared = match &app.fleet {
            Some(fleet) => runtime.block_on(fleet.remove_from_whitelist(name))?,
            None => false,
        };
        match (from_file, shared) {
            (true, _) => println!(
                "removed {name} from {} (its stored data stays)",
                list.path().display()
            ),
            (false, true) => println!(
                "removed {name} from the fleet's shared whitelist in {} (its stored data stays)",
                app.store.location()
            ),
            (false, false) => {
                eprintln!("{name} is not a line of {}", list.path().display());
                code = ExitCode::FAILURE;
            }
        }
    }
    Ok(code)
}

fn mirror(config: Config, once: bool) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    if !once {
        anyhow::bail!("use `sluice mirror --once` to catch up and exit, or `sluice serve` with policy.mode = \"mirror\" to follow continuously");
    }
    let app = App::build(config)?;
    let follower = sluice::jobs::mirror::Follower::new(app).map_err(anyhow::Error::msg)?;
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let started = std::time::Instant::now();
    let runtime = tokio::runtime::Runtime::new()?;
    let summary = runtime.block_on(follower.catch_up(&bar))?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "caught up to {} (head {}): {} changes read, {} packages stored, {} failed, in {secs:.1}s ({:.0} packages/s)",
        summary.checkpoint,
        summary.head,
        summary.changes,
        summary.packages,
        summary.failed,
        summary.packages as f64 / secs.max(0.001)
    );
    Ok(if summary.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn reindex(config: Config) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    let store = sluice::store::open(&config)?;
    let bar = if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} {wide_bar} {pos}/{len} packages ({per_sec}, {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message("listing the store");
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let started = std::time::Instant::now();
    let runtime = tokio::runtime::Runtime::new()?;
    // In a fleet the new index records the journal position it covers, so the server that
    // opens it next follows the journal from there.
    let journal = (config.storage.backend == sluice::config::Backend::S3).then(|| {
        std::sync::Arc::new(sluice::core::fleet::Fleet::new(
            store.clone(),
            &config.cluster.node,
        )) as std::sync::Arc<dyn sluice::search::Journal>
    });
    let done = runtime.block_on(sluice::search::reindex(
        store,
        journal,
        &config.storage.dir,
        &|progress| {
            if progress.total > 0 {
                bar.set_message("indexing");
                bar.set_length(progress.total);
                bar.set_position(progress.done);
            }
        },
    ))?;
    bar.finish_and_clear();
    println!(
        "search index rebuilt{}: {} packages indexed in {:.1}s ({})",
        if done.by_server {
            " by the running server"
        } else {
            ""
        },
        done.documents,
        started.elapsed().as_secs_f64(),
        config.storage.dir.join(sluice::search::FOLDER).display()
    );
    Ok(ExitCode::SUCCESS)
}

fn verify(config: Config) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    let store = sluice::store::open(&config)?;
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(0)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(store.verify(&|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    }))?;
    bar.finish_and_clear();
    for key in &report.corrupt {
        println!("corrupt, removed: {key}");
    }
    for key in &report.missing {
        println!("content missing, removed: {key}");
    }
    println!(
        "{} entries checked in {}: {} good, {} corrupt, {} missing",
        report.ok as usize + report.corrupt.len() + report.missing.len(),
        store.location(),
        report.ok,
        report.corrupt.len(),
        report.missing.len()
    );
    Ok(if report.corrupt.is_empty() && report.missing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The registry of `config` for an admin command, and a runtime to drive it.
fn admin_app(config: Config) -> anyhow::Result<(std::sync::Arc<App>, tokio::runtime::Runtime)> {
    let runtime = tokio::runtime::Runtime::new()?;
    let app = App::build(config)?;
    runtime.block_on(app.sync_live());
    Ok((app, runtime))
}

/// The command line's actor: the operator at the machine, an admin.
fn operator(app: &App) -> (sluice::auth::Identity, &App) {
    (sluice::auth::Identity::local_operator(), app)
}

/// `sluice user list|admin|2fa`: what the store keeps of users.
fn stored_user(config: Config, action: UserAction) -> anyhow::Result<ExitCode> {
    use sluice::api::admin::{self, Actor};
    let (app, runtime) = admin_app(config)?;
    let (who, app) = operator(&app);
    let actor = Actor {
        app,
        who: &who,
        address: None,
    };
    runtime.block_on(async {
        match action {
            UserAction::List => {
                for user in admin::users(actor).await? {
                    let role = if user.admin { "admin" } else { "user" };
                    let two = if user.two_factor { ", 2fa" } else { "" };
                    let source = format!("{:?}", user.source).to_lowercase();
                    println!("{}\t{role}{two}\t{source}\t{}", user.name, user.email);
                }
            }
            UserAction::Admin { name, revoke } => {
                admin::set_admin(actor, &name, !revoke).await?;
                let now = if revoke {
                    "no longer an admin"
                } else {
                    "an admin"
                };
                println!("{name} is {now} (kept in the store)");
            }
            UserAction::TwoFactor { name, remove: true } => {
                let removed = admin::remove_two_factor(actor, &name).await?;
                anyhow::ensure!(removed, "{name} has no second factor");
                println!("removed the second factor of {name}");
            }
            UserAction::TwoFactor { name, .. } => {
                let enrolled = admin::enroll_two_factor(actor, &name).await?;
                println!("{}", enrolled.uri);
                println!("secret: {}", enrolled.secret);
                println!("recovery codes (each works once; they are not shown again):");
                for code in &enrolled.recovery_codes {
                    println!("  {code}");
                }
            }
            _ => {}
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// When the store keeps a password for `name` (set from the console), change it there:
/// it is the one in force. Whether it did.
fn password_in_store(config: &Config, name: &str, password: &str) -> anyhow::Result<bool> {
    let (app, runtime) = match admin_app(config.clone()) {
        Ok(built) => built,
        Err(error) => {
            // The users file works without the store: change it there.
            eprintln!("sluice: warning: cannot read the store's users ({error:#})");
            return Ok(false);
        }
    };
    let (who, app) = operator(&app);
    let stored = runtime.block_on(app.auth.stored_password(name));
    if !stored {
        return Ok(false);
    }
    let actor = sluice::api::admin::Actor {
        app,
        who: &who,
        address: None,
    };
    runtime.block_on(sluice::api::admin::reset_password(actor, name, password))?;
    Ok(true)
}

/// Remove `name` from the store's users; whether it was there.
fn remove_from_store(config: &Config, name: &str) -> anyhow::Result<bool> {
    let (app, runtime) = match admin_app(config.clone()) {
        Ok(built) => built,
        Err(error) => {
            eprintln!("sluice: warning: cannot read the store's users ({error:#})");
            return Ok(false);
        }
    };
    let (who, app) = operator(&app);
    let actor = sluice::api::admin::Actor {
        app,
        who: &who,
        address: None,
    };
    Ok(runtime.block_on(sluice::api::admin::remove_user(actor, name))?)
}

/// `sluice settings [set KEY VALUE | unset KEY]`.
fn settings(config: Config, action: Option<SettingsAction>) -> anyhow::Result<ExitCode> {
    use sluice::api::admin::{self, Actor};
    let (app, runtime) = admin_app(config)?;
    let (who, app) = operator(&app);
    let actor = Actor {
        app,
        who: &who,
        address: None,
    };
    let changed = match action {
        None => None,
        Some(SettingsAction::Set { key, value }) => {
            Some(runtime.block_on(admin::set_setting(actor, &key, &value))?)
        }
        Some(SettingsAction::Unset { key }) => {
            Some(runtime.block_on(admin::unset_setting(actor, &key))?)
        }
    };
    if let Some(effective) = changed {
        println!(
            "{} = {} ({}): every node follows within cluster.sync ({})",
            effective.key,
            effective.value,
            effective.source,
            humantime::format_duration(app.config.cluster.sync)
        );
        return Ok(ExitCode::SUCCESS);
    }
    for effective in admin::settings(app) {
        println!("{}", setting_line(&effective));
    }
    Ok(ExitCode::SUCCESS)
}

/// `key = value  # source`, with who set it and when for a value set live.
fn setting_line(effective: &sluice::core::settings::Effective) -> String {
    let from = match &effective.set_by {
        Some((by, at)) => format!(
            "{} (set by {by} at {})",
            effective.source,
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(*at)
            )
        ),
        None => effective.source.to_string(),
    };
    format!("{} = \"{}\"  # {from}", effective.key, effective.value)
}

/// `sluice check`'s last part: the live settings in force and where each comes from (as
/// comments, so the printout stays the configuration it was).
fn print_live_settings(config: Config) {
    println!("\n# live settings in force (sluice settings), each with where it comes from:");
    match admin_app(config) {
        Ok((app, _runtime)) => {
            for effective in sluice::api::admin::settings(&app) {
                println!("# {}", setting_line(&effective));
            }
        }
        Err(error) => println!("# cannot read the store: {error:#}"),
    }
}

/// `--since`: an RFC 3339 time or an age, as unix ms.
fn since_ms(since: &str) -> anyhow::Result<u64> {
    let at = match humantime::parse_rfc3339_weak(since) {
        Ok(at) => at,
        Err(_) => {
            let age = humantime::parse_duration(since).map_err(|_| {
                anyhow::anyhow!(
                    "--since {since}: neither a time (2025-01-31T12:00:00Z) nor an age (2h, 7d)"
                )
            })?;
            std::time::SystemTime::now() - age
        }
    };
    Ok(at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0))
}

/// `sluice audit-log [--since …] [--json]`.
fn audit_log(config: Config, since: Option<&str>, json: bool) -> anyhow::Result<ExitCode> {
    let since = since.map(since_ms).transpose()?.unwrap_or(0);
    let (app, runtime) = admin_app(config)?;
    let entries = runtime.block_on(app.audit.since(since))?;
    for entry in &entries {
        if json {
            println!("{}", serde_json::to_string(entry)?);
            continue;
        }
        let at = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(entry.at),
        );
        println!(
            "{at}  {:<16} {:<14} {:<15} {}{}",
            entry.action.to_string(),
            entry.actor.as_deref().unwrap_or("-"),
            entry.address.as_deref().unwrap_or("-"),
            entry.subject,
            if entry.detail.is_empty() {
                String::new()
            } else {
                format!("  ({})", entry.detail)
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
