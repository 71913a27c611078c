//! `airlock demo`: a self-contained sandbox. It starts an ephemeral
//! PostgreSQL (`initdb`/`pg_ctl` from PATH) in a fresh temp dir, seeds a
//! `demo` database with fake customers and orders and two upstream roles
//! whose passwords only airlock holds, renders `examples/demo.yaml` and
//! runs the gateway on it in-process with the dev issuer. It prints
//! paste-ready `psql` lines for an agent and a DBA, and on Ctrl-C or SIGTERM
//! stops the gateway and PostgreSQL and removes the temp dir.
//!
//! Everything the demo creates lives in that one temp dir:
//!
//! ```text
//! /tmp/airlock-demo-XXXXXX/
//!   airlock.yaml      the rendered configuration
//!   airlock-data/     the gateway's data dir (the dev issuer's key)
//!   secrets/          the upstream roles' passwords (mode 0600)
//!   pg/               PostgreSQL: data/, its Unix socket and postgres.log
//! ```
//!
//! When run as root, PostgreSQL (which refuses to run as root) runs as the
//! `postgres` user through `runuser`, and owns `pg/`.

use std::borrow::Cow;
use std::fs;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::AsyncWriteExt as _;

use crate::serve::Running;

/// The configuration template, with `{{placeholders}}` (see the file).
const TEMPLATE: &str = include_str!("../../../examples/demo.yaml");

/// The gateway's listeners, when these ports are free.
const DEFAULT_POSTGRES_PORT: u16 = 6432;
const DEFAULT_HTTP_PORT: u16 = 8080;
const DEFAULT_MYSQL_PORT: u16 = 6033;

/// How long the gateway may take to close its listeners at shutdown.
const GATEWAY_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The upstream roles airlock logs in as; their passwords are in
/// `secrets/<role>.password`.
const RO_ROLE: &str = "airlock_ro";
const ADMIN_ROLE: &str = "airlock_admin";

/// Runs the demo until Ctrl-C or SIGTERM.
pub async fn run() -> Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    // Polled from the start (also while starting up), so that an early
    // Ctrl-C still cleans up instead of killing the process.
    let stop_requested = async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "Ctrl-C",
            _ = terminate.recv() => "SIGTERM",
        }
    };
    tokio::pin!(stop_requested);

    let demo = tokio::select! {
        demo = Demo::start() => demo?,
        why = &mut stop_requested => {
            // Dropping the half-started demo stops PostgreSQL and removes
            // the temp dir.
            tracing::info!("{why} while starting; cleaning up");
            return Ok(());
        }
    };
    let exe = std::env::current_exe().context("finding the airlock binary's path")?;
    println!("{}", demo.instructions(&exe));
    let why = stop_requested.await;
    tracing::info!("{why}: stopping the demo");
    demo.stop().await
}

/// A started demo.
struct Demo {
    running: Running,
    config_path: PathBuf,
    sandbox: Sandbox,
}

impl Demo {
    async fn start() -> Result<Demo> {
        let as_postgres = is_root();
        let bins = PgBins::find(as_postgres)?;
        let temp = tempfile::Builder::new()
            .prefix("airlock-demo-")
            .tempdir()
            .context("creating the demo's temp dir")?;
        let dir = temp.path().to_path_buf();
        let mut sandbox = Sandbox {
            dir: Some(temp),
            server: None,
            mariadb: None,
        };
        tracing::info!(dir = %dir.display(), "starting the airlock demo");
        if dir.to_str().is_none() {
            bail!(
                "the temp dir {} is not valid UTF-8; set TMPDIR",
                dir.display()
            );
        }

        let pg_dir = dir.join("pg");
        let data = pg_dir.join("data");
        // PostgreSQL's Unix socket, pg/.s.PGSQL.<port>, must fit in sun_path.
        if pg_dir.as_os_str().len() + "/.s.PGSQL.65535".len() > 107 {
            bail!(
                "the temp dir {} is too long for PostgreSQL's Unix socket; set TMPDIR to a shorter directory",
                dir.display()
            );
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&pg_dir)
            .with_context(|| format!("creating {}", pg_dir.display()))?;
        // Only the owner may look inside; as root, the `postgres` user may
        // also reach pg/ (but list nothing).
        let mode = if as_postgres { 0o711 } else { 0o700 };
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", dir.display()))?;
        if as_postgres {
            let mut chown = tokio::process::Command::new("chown");
            chown.arg("postgres").arg(&pg_dir);
            run_tool(
                chown,
                None,
                "chown postgres (PostgreSQL refuses to run as root)",
            )
            .await?;
        }

        let pg_port = free_port(0)?;
        tracing::info!(port = pg_port, "initializing PostgreSQL");
        let initdb = bins.command(&bins.initdb, &pg_dir);
        run_tool(
            with_args(
                initdb,
                [
                    "-D".as_ref(),
                    data.as_os_str(),
                    "-U".as_ref(),
                    "postgres".as_ref(),
                    "--auth-local=trust".as_ref(),
                    "--auth-host=scram-sha-256".as_ref(),
                    "--no-locale".as_ref(),
                    "-E".as_ref(),
                    "UTF8".as_ref(),
                    "--no-sync".as_ref(),
                ],
            ),
            None,
            "initdb",
        )
        .await?;

        // From here on, dropping the sandbox stops the server.
        sandbox.server = Some(Server {
            pg_ctl: bins.pg_ctl.clone(),
            runuser: bins.runuser.clone(),
            data: data.clone(),
            pg_dir: pg_dir.clone(),
        });
        let log = pg_dir.join("postgres.log");
        let options = format!(
            "-p {pg_port} -k {} -c listen_addresses=127.0.0.1 -c password_encryption=scram-sha-256 \
             -c fsync=off -c unix_socket_permissions=0700",
            // pg_ctl hands -o to a shell.
            shell_quote(path_str(&pg_dir)?)
        );
        let pg_ctl = bins.command(&bins.pg_ctl, &pg_dir);
        let started = run_tool(
            with_args(
                pg_ctl,
                [
                    "-D".as_ref(),
                    data.as_os_str(),
                    "-l".as_ref(),
                    log.as_os_str(),
                    "-w".as_ref(),
                    "-o".as_ref(),
                    options.as_ref(),
                    "start".as_ref(),
                ],
            ),
            None,
            "pg_ctl start",
        )
        .await;
        if let Err(e) = started {
            let text = fs::read_to_string(&log).unwrap_or_default();
            bail!(
                "{e:#}\nPostgreSQL's log ({}):\n{}",
                log.display(),
                text.trim_end()
            );
        }

        tracing::info!("seeding database demo");
        let ro_password = random_password()?;
        let admin_password = random_password()?;
        let seed = SEED_SQL
            .replace("@RO_ROLE@", RO_ROLE)
            .replace("@ADMIN_ROLE@", ADMIN_ROLE)
            .replace("@RO_PASSWORD@", &ro_password)
            .replace("@ADMIN_PASSWORD@", &admin_password);
        let mut psql = tokio::process::Command::new(&bins.psql);
        psql.current_dir(&pg_dir)
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&pg_dir)
            .args([
                "-p",
                &pg_port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-f",
                "-",
            ]);
        run_tool(psql, Some(seed), "seeding the demo database with psql").await?;

        let secrets = dir.join("secrets");
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&secrets)
            .with_context(|| format!("creating {}", secrets.display()))?;
        write_secret(&secrets.join(format!("{RO_ROLE}.password")), &ro_password)?;
        write_secret(
            &secrets.join(format!("{ADMIN_ROLE}.password")),
            &admin_password,
        )?;

        // The same data in MariaDB, when it is installed.
        if crate::demo_mariadb::available() {
            let export = |sql: &str| {
                let mut psql = tokio::process::Command::new(&bins.psql);
                psql.current_dir(&pg_dir)
                    .args(["-X", "-q", "-A", "-t", "-F", "\t", "-h"])
                    .arg(&pg_dir)
                    .args([
                        "-p",
                        &pg_port.to_string(),
                        "-U",
                        "postgres",
                        "-d",
                        "demo",
                        "-c",
                        sql,
                    ]);
                run_tool(psql, None, "exporting the demo data for MariaDB")
            };
            let customers = export(
                "SELECT id, name, email, ssn, card_number, external_id FROM customers ORDER BY id",
            )
            .await?;
            let orders = export(
                "SELECT id, customer_id, amount, status, to_char(created_at, 'YYYY-MM-DD HH24:MI:SS') \
                 FROM orders ORDER BY id",
            )
            .await?;
            let my_dir = dir.join("mysql");
            let my_port = free_port(0)?;
            tracing::info!(port = my_port, "starting MariaDB");
            let (ro, admin) = (ro_password.clone(), admin_password.clone());
            let started = tokio::task::spawn_blocking(move || {
                let db = crate::demo_mariadb::start(&my_dir, my_port, is_root())?;
                db.seed([(RO_ROLE, &ro), (ADMIN_ROLE, &admin)], &customers, &orders)?;
                anyhow::Ok(db)
            })
            .await
            .context("starting MariaDB")?;
            sandbox.mariadb = Some(started.context("the demo's MariaDB")?);
        } else {
            tracing::info!("MariaDB is not installed: the demo runs PostgreSQL alone");
        }
        let my_port = sandbox.mariadb.as_ref().map(|m| m.port);

        let config_path = dir.join("airlock.yaml");
        let mut listen = (
            free_port(DEFAULT_POSTGRES_PORT)?,
            free_port(DEFAULT_HTTP_PORT)?,
            free_port(DEFAULT_MYSQL_PORT)?,
        );
        let mut attempt = 1;
        let running = loop {
            let loopback = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let mysql = my_port.map(|port| (port, loopback(listen.2)));
            let yaml = render(&dir, pg_port, loopback(listen.0), loopback(listen.1), mysql)?;
            fs::write(&config_path, yaml)
                .with_context(|| format!("writing {}", config_path.display()))?;
            let config = crate::serve::load(&config_path)?;
            match crate::serve::start(config, Some(config_path.clone())).await {
                Ok(running) => break running,
                // Somebody took a port between the check and the bind.
                Err(e) if attempt < 3 && format!("{e:#}").contains("binding listen.") => {
                    tracing::warn!(error = %format!("{e:#}"), "retrying on other ports");
                    attempt += 1;
                    listen = (free_port(0)?, free_port(0)?, free_port(0)?);
                }
                Err(e) => return Err(e.context("starting the gateway")),
            }
        };
        Ok(Demo {
            running,
            config_path,
            sandbox,
        })
    }

    /// The paste-ready lines.
    fn instructions(&self, exe: &Path) -> String {
        let pg = self
            .running
            .postgres
            .expect("the demo configuration has a PostgreSQL listener");
        let exe = shell_quote(&exe.to_string_lossy()).into_owned();
        let config = shell_quote(&self.config_path.to_string_lossy()).into_owned();
        let line = |sub: &str, group: &str, user: &str| {
            format!(
                "PGPASSWORD=$({exe} token --config {config} --sub {sub} --groups {group}) \
                 psql \"host={} port={} dbname=demo user={user}\"",
                pg.ip(),
                pg.port()
            )
        };
        let server = self
            .running
            .http
            .map(|h| format!("http://{}", airlock_gateway::local_addr(h)))
            .unwrap_or_default();
        let mysql = match self.running.mysql {
            Some(my) => {
                let line = |sub: &str, group: &str, user: &str| {
                    format!(
                        "MYSQL_PWD=$({exe} token --config {config} --sub {sub} --groups {group}) \
                         mysql -h {} -P {} -u {user} demo_mysql",
                        my.ip(),
                        my.port()
                    )
                };
                format!(
                    "\n  # the same, through MySQL (MariaDB with the same data)\n  {}\n  {}\n",
                    line("agent", "ai-agents", "readonly"),
                    line("dba", "dba", "admin")
                )
            }
            None => String::new(),
        };
        format!(
            "airlock demo is running. Paste these in another terminal:\n\
             \n  # an AI agent (group ai-agents): read-only\n  {}\n\
             \n  # a DBA (group dba): read-write\n  {}\n{mysql}\
             \nTry: select name, email from customers limit 5;   delete from orders;\n  (the agent is read-only; the DBA's unbounded delete waits for an approval)\n\
             \n  # a reviewer (group dba) decides held statements; nobody approves their own\n  \
             export AIRLOCK_SERVER={server} AIRLOCK_TOKEN=$({exe} token --config {config} --sub reviewer --groups dba)\n  \
             {exe} approvals list\n  {exe} approvals approve <id>   # or: deny <id> --reason \"...\"\n\
             \n  # an auditor (group security): every session is recorded\n  \
             export AIRLOCK_SERVER={server} AIRLOCK_TOKEN=$({exe} token --config {config} --sub auditor --groups security)\n  \
             {exe} sessions list\n  {exe} sessions replay <session id>\n\
             \n  # the web console: log in on the dev issuer's page as reviewer (groups dba),\n  \
             # auditor (security) or an admin (admins)\n  \
             Console: {server}/console\n\
             \n  # an agent over MCP (Streamable HTTP; docs/mcp.md shows Claude Code, Cursor, Devin)\n  \
             MCP URL: {server}/mcp\n  \
             Authorization: Bearer $({exe} token --config {config} --sub agent --groups ai-agents --ttl 8h)\n\
             \nPress Ctrl-C to stop; everything the demo created is removed.",
            line("agent", "ai-agents", "readonly"),
            line("dba", "dba", "admin"),
        )
    }

    /// Stops the gateway, then PostgreSQL, and removes the temp dir.
    async fn stop(self) -> Result<()> {
        let Demo {
            running, sandbox, ..
        } = self;
        if tokio::time::timeout(GATEWAY_STOP_TIMEOUT, running.stop_within(Duration::ZERO))
            .await
            .is_err()
        {
            tracing::warn!("the gateway did not stop within {GATEWAY_STOP_TIMEOUT:?}; going on");
        }
        tokio::task::spawn_blocking(move || sandbox.close())
            .await
            .context("cleaning up")??;
        tracing::info!("the demo stopped and removed its temp dir");
        Ok(())
    }
}

/// Owns the temp dir and the PostgreSQL server in it: on drop (a failed or
/// interrupted start included), stops the server and removes the dir.
struct Sandbox {
    dir: Option<tempfile::TempDir>,
    server: Option<Server>,
    mariadb: Option<crate::demo_mariadb::MariaDb>,
}

struct Server {
    pg_ctl: PathBuf,
    runuser: Option<PathBuf>,
    data: PathBuf,
    pg_dir: PathBuf,
}

impl Sandbox {
    fn close(mut self) -> Result<()> {
        self.cleanup()
    }

    fn cleanup(&mut self) -> Result<()> {
        if let Some(server) = self.server.take() {
            server.stop();
        }
        // Dropping it stops MariaDB.
        self.mariadb.take();
        match self.dir.take() {
            Some(dir) => {
                let path = dir.path().to_path_buf();
                dir.close()
                    .with_context(|| format!("removing {}", path.display()))
            }
            None => Ok(()),
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup() {
            tracing::error!("{e:#}");
        }
    }
}

impl Server {
    /// `pg_ctl stop -m fast`, then `-m immediate` if that fails while the
    /// server still runs.
    fn stop(&self) {
        if !self.data.join("postmaster.pid").exists() {
            return;
        }
        for mode in ["fast", "immediate"] {
            let out = std_command(self.runuser.as_deref(), &self.pg_ctl)
                .current_dir(&self.pg_dir)
                .arg("-D")
                .arg(&self.data)
                .args(["-m", mode, "-w", "-t", "30", "stop"])
                .stdin(Stdio::null())
                .process_group(0)
                .output();
            match out {
                Ok(out) if out.status.success() => return,
                Ok(out) => tracing::warn!(
                    mode,
                    "pg_ctl stop failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => tracing::warn!(mode, "cannot run pg_ctl stop: {e}"),
            }
            if !self.data.join("postmaster.pid").exists() {
                return;
            }
        }
    }
}

/// Where PostgreSQL's programs are.
struct PgBins {
    initdb: PathBuf,
    pg_ctl: PathBuf,
    psql: PathBuf,
    /// `runuser`, when running as root.
    runuser: Option<PathBuf>,
}

impl PgBins {
    /// `initdb` from PATH, or else from the usual install locations;
    /// `pg_ctl` and `psql` preferably from the same directory.
    fn find(as_postgres: bool) -> Result<PgBins> {
        let path: Vec<PathBuf> = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        let fallback = fallback_dirs();
        let find = |name: &str, first: Option<&Path>| {
            first
                .map(Path::to_path_buf)
                .into_iter()
                .chain(path.iter().cloned())
                .chain(fallback.iter().cloned())
                .map(|dir| dir.join(name))
                .find(|p| is_executable(p))
        };
        let missing = |name: &str| {
            anyhow::anyhow!(
                "airlock demo needs PostgreSQL's `{name}`, which is neither on PATH nor in \
                 /usr/lib/postgresql/*/bin; install the PostgreSQL server (such as \
                 `apt install postgresql`) or put its bin directory on PATH"
            )
        };
        let initdb = find("initdb", None).ok_or_else(|| missing("initdb"))?;
        let dir = initdb.parent();
        let pg_ctl = find("pg_ctl", dir).ok_or_else(|| missing("pg_ctl"))?;
        let psql = find("psql", dir).ok_or_else(|| missing("psql"))?;
        let runuser = if as_postgres {
            let sbin = [Path::new("/usr/sbin"), Path::new("/sbin")];
            let found = path
                .iter()
                .map(PathBuf::as_path)
                .chain(sbin)
                .map(|d| d.join("runuser"))
                .find(|p| is_executable(p));
            Some(found.context(
                "running as root, airlock demo runs PostgreSQL as the `postgres` user with `runuser`, \
                 which was not found",
            )?)
        } else {
            None
        };
        Ok(PgBins {
            initdb,
            pg_ctl,
            psql,
            runuser,
        })
    }

    /// A command running `program` in `cwd`, as the `postgres` user when
    /// running as root.
    fn command(&self, program: &Path, cwd: &Path) -> tokio::process::Command {
        let mut cmd = std_command(self.runuser.as_deref(), program);
        cmd.current_dir(cwd);
        tokio::process::Command::from(cmd)
    }
}

/// `program`, through `runuser -u postgres --` when `runuser` is given.
fn std_command(runuser: Option<&Path>, program: &Path) -> std::process::Command {
    match runuser {
        Some(runuser) => {
            let mut c = std::process::Command::new(runuser);
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        }
        None => std::process::Command::new(program),
    }
}

/// Installation directories of PostgreSQL servers, newest version first.
fn fallback_dirs() -> Vec<PathBuf> {
    let mut versioned: Vec<(u32, PathBuf)> = Vec::new();
    for (parent, prefix) in [("/usr/lib/postgresql", ""), ("/usr", "pgsql-")] {
        let Ok(entries) = fs::read_dir(parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(version) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
                continue;
            };
            if let Ok(major) = version.split('.').next().unwrap_or_default().parse::<u32>() {
                versioned.push((major, entry.path().join("bin")));
            }
        }
    }
    versioned.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    versioned
        .into_iter()
        .map(|(_, dir)| dir)
        .chain([PathBuf::from("/usr/local/pgsql/bin")])
        .collect()
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn with_args<'a>(
    mut cmd: tokio::process::Command,
    args: impl IntoIterator<Item = &'a std::ffi::OsStr>,
) -> tokio::process::Command {
    cmd.args(args);
    cmd
}

/// Runs a tool to completion, feeding it `stdin`, and returns its stdout.
/// The tool gets a process group of its own: a Ctrl-C in the terminal then
/// reaches only airlock, which stops everything in order (the server that
/// `pg_ctl start` leaves running stays in that group). If the demo is
/// interrupted while the tool runs, the whole group is killed.
async fn run_tool(
    mut cmd: tokio::process::Command,
    stdin: Option<String>,
    what: &str,
) -> Result<String> {
    cmd.process_group(0)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("{what}: cannot run {program}"))?;
    let mut group = KillGroupOnDrop(child.id());
    let input = child.stdin.take();
    let feed = async move {
        if let (Some(mut pipe), Some(text)) = (input, stdin) {
            // An early exit shows up in the exit status.
            let _ = pipe.write_all(text.as_bytes()).await;
        }
    };
    let ((), out) = tokio::join!(feed, child.wait_with_output());
    group.0 = None;
    let out = out.with_context(|| format!("{what}: waiting for it"))?;
    if !out.status.success() {
        let output: Vec<String> = [&out.stderr, &out.stdout]
            .into_iter()
            .map(|o| String::from_utf8_lossy(o).trim().to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        bail!("{what} failed ({}):\n{}", out.status, output.join("\n"));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Kills a process group on drop, unless disarmed.
struct KillGroupOnDrop(Option<u32>);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// `preferred` if nothing listens on it on 127.0.0.1 (or `preferred` is 0),
/// otherwise a port the system picks.
fn free_port(preferred: u16) -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, preferred))
        .or_else(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .context("finding a free port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

/// Renders the template: YAML single-quoted strings hold the dir. `mysql`:
/// MariaDB's port and the gateway's MySQL listener, when MariaDB runs
/// (otherwise the lines marked `# mysql` are left out).
fn render(
    dir: &Path,
    pg_port: u16,
    postgres: SocketAddr,
    http: SocketAddr,
    mysql: Option<(u16, SocketAddr)>,
) -> Result<String> {
    let dir = path_str(dir)?.replace('\'', "''");
    // The template's own header explains the placeholders; the rendered file
    // gets a header of its own instead.
    let body = TEMPLATE
        .split_once("\n\n")
        .map_or(TEMPLATE, |(_, body)| body);
    let body = body
        .replace("{{dir}}", &dir)
        .replace("{{pg_port}}", &pg_port.to_string())
        .replace("{{postgres_listen}}", &postgres.to_string())
        .replace("{{http_listen}}", &http.to_string());
    let body: String = body
        .lines()
        .filter_map(|line| match (line.strip_suffix("  # mysql"), mysql) {
            (None, _) => Some(line.to_string()),
            (Some(_), None) => None,
            (Some(kept), Some((port, listen))) => Some(
                kept.replace("{{mysql_port}}", &port.to_string())
                    .replace("{{mysql_listen}}", &listen.to_string()),
            ),
        })
        .map(|l| l + "\n")
        .collect();
    Ok(format!(
        "# Written by `airlock demo` from examples/demo.yaml; removed when the demo stops.\n\n{body}"
    ))
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not valid UTF-8", path.display()))
}

/// `s` as one shell word.
fn shell_quote(s: &str) -> Cow<'_, str> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"/._-+,:=@%".contains(&b);
    if !s.is_empty() && s.bytes().all(plain) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("'{}'", s.replace('\'', r"'\''")))
    }
}

/// 32 random hex digits from the kernel.
fn random_password() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(
        &mut fs::File::open("/dev/urandom").context("opening /dev/urandom")?,
        &mut bytes,
    )
    .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes a password file readable by its owner only.
fn write_secret(path: &Path, secret: &str) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(file, "{secret}").with_context(|| format!("writing {}", path.display()))
}

/// Whether the effective user is root.
fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    })
}

/// The sample schema and data, run by psql as the superuser. The data is
/// fake but shaped like the real thing: names, emails derived from them,
/// SSN-formatted strings, Luhn-valid test card numbers and UUIDs.
const SEED_SQL: &str = concat!(
    r#"
CREATE ROLE @RO_ROLE@ LOGIN PASSWORD '@RO_PASSWORD@';
CREATE ROLE @ADMIN_ROLE@ LOGIN PASSWORD '@ADMIN_PASSWORD@';
CREATE DATABASE demo;
\connect demo
"#,
    include_str!("../../../examples/demo-data.sql")
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_renders_to_a_valid_configuration() {
        let dir = Path::new("/tmp/airlock-demo-it's");
        let yaml = render(
            dir,
            54321,
            "127.0.0.1:6432".parse().unwrap(),
            "127.0.0.1:18080".parse().unwrap(),
            None,
        )
        .unwrap();
        assert!(!yaml.contains("{{") && !yaml.contains("mysql"), "{yaml}");
        let config = airlock_config::Config::from_yaml_str(&yaml, "demo.yaml").unwrap();
        assert_eq!(
            config.listen.postgres,
            Some("127.0.0.1:6432".parse().unwrap())
        );
        assert_eq!(config.listen.http, Some("127.0.0.1:18080".parse().unwrap()));
        assert!(config.identity.dev_issuer);
        assert_eq!(config.data_dir, dir.join("airlock-data"));
        let demo = &config.connections["demo"];
        assert_eq!(demo.port(), 54321);
        assert_eq!(demo.upstream.database, "demo");
        assert_eq!(demo.roles["readonly"].user, RO_ROLE);
        assert_eq!(demo.roles["admin"].user, ADMIN_ROLE);
        assert_eq!(
            config.watched_files(),
            [
                dir.join("secrets/airlock_admin.password"),
                dir.join("secrets/airlock_ro.password")
            ]
        );
        let rules: Vec<&str> = config.access.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(rules, ["agents-read", "dba"]);

        // With MariaDB: its connection, listener and access rule.
        let yaml = render(
            dir,
            54321,
            "127.0.0.1:6432".parse().unwrap(),
            "127.0.0.1:18080".parse().unwrap(),
            Some((33061, "127.0.0.1:6033".parse().unwrap())),
        )
        .unwrap();
        assert!(!yaml.contains("{{") && !yaml.contains("# mysql"), "{yaml}");
        let config = airlock_config::Config::from_yaml_str(&yaml, "demo.yaml").unwrap();
        assert_eq!(config.listen.mysql, Some("127.0.0.1:6033".parse().unwrap()));
        let my = &config.connections["demo_mysql"];
        assert_eq!(my.protocol, airlock_config::Protocol::Mysql);
        assert_eq!(my.port(), 33061);
        let rules: Vec<&str> = config.access.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(rules, ["agents-read", "agents-read-mysql", "dba"]);
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(
            shell_quote("/tmp/airlock-demo-x1/airlock.yaml"),
            "/tmp/airlock-demo-x1/airlock.yaml"
        );
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
