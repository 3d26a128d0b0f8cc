//! The container's env file: what `render-stack-env` writes for `docker run --env-file`.
//!
//! Inputs: `runtime.env` (the host's ports and VM folder) and `base.env` (the product's
//! configuration) on the `STACKCFG` disk, the internal keys of [`shared::emulator::keystore`], and the
//! build env file saying whether this boot builds a snapshot. The output, in this order:
//! base.env's entries, runtime.env's entries (file order, duplicates kept, comments dropped),
//! the three internal keys, `CRON_SECRET` in snapshot mode only, then the computed block —
//! the same names, order and values as the original's heredoc — and last the variables the
//! product renamed under their other generation's name ([`shared::emulator::names`]): each of
//! `STACK_INTERNAL_PROJECT_{PUBLISHABLE_CLIENT,SECRET_SERVER}_KEY` and
//! `NEXT_PUBLIC_HEXCLAVE_PORT_PREFIX` also as the released Stack Auth image reads it
//! (`STACK_SEED_INTERNAL_PROJECT_…`, `NEXT_PUBLIC_STACK_PORT_PREFIX`), with the value docker
//! ends up with for either name. The original's lines keep their order and bytes; the
//! extra lines only follow them. An input that uses either name is one variable to docker.
//!
//! The original `source`d runtime.env and then base.env, so for the values it computes with a
//! definition in base.env wins over one in runtime.env, and within a file the last one wins.
//! Only the files count: the process environment is never consulted (the original fell back on
//! it for a variable the files did not set). Everything is parsed and validated before anything
//! is written: required variables, ports (1-65535, digits, no leading zero) and the port
//! prefix, with errors naming the file, line and variable. The output is replaced atomically
//! with mode 0600, so a failure leaves the previous file (and the keys) as they were.

use std::io::Write;
use std::path::{Path, PathBuf};

use shared::emulator::envfile::{self, EnvFile};
use shared::emulator::keystore::{self, KeyStore, Keys};
use shared::emulator::names::{
    self, PORT_PREFIX as PREFIX_VAR, PUBLISHABLE_CLIENT_KEY, SECRET_SERVER_KEY,
    SUPER_SECRET_ADMIN_KEY,
};
use shared::error::{Context, Error, Result};
use shared::os::atomic;
use shared::os::blockdev::{self, Disk, Mounted};
use shared::os::mounts;

pub const DEFAULT_LABEL: &str = "STACKCFG";
pub const DEFAULT_MOUNT_POINT: &str = "/mnt/stack-runtime";
pub const RUNTIME_ENV: &str = "runtime.env";
pub const BASE_ENV: &str = "base.env";
pub const DEFAULT_BUILD_ENV: &str = shared::emulator::BUILD_ENV;
pub const DEFAULT_OUTPUT: &str = "/run/stack-auth/local-emulator.env";
/// The mode of the output file.
pub const OUTPUT_MODE: u32 = 0o600;

/// The build env entry that selects snapshot-build mode when set to exactly `1`.
pub const SNAPSHOT_VAR: &str = "STACK_EMULATOR_BUILD_SNAPSHOT";
/// The public `CRON_SECRET` of snapshot builds, swapped out on every resume.
pub const CRON_SECRET_PLACEHOLDER: &str =
    "00000000000000000000000000000000cccccccccccccccccccccccccccccccc";

pub const PORT_PREFIX: &str = "STACK_EMULATOR_PORT_PREFIX";
pub const BACKEND_PORT: &str = "STACK_EMULATOR_BACKEND_HOST_PORT";
pub const DASHBOARD_PORT: &str = "STACK_EMULATOR_DASHBOARD_HOST_PORT";
pub const MINIO_PORT: &str = "STACK_EMULATOR_MINIO_HOST_PORT";
pub const INBUCKET_PORT: &str = "STACK_EMULATOR_INBUCKET_HOST_PORT";
pub const MOCK_OAUTH_PORT: &str = "STACK_EMULATOR_MOCK_OAUTH_HOST_PORT";

/// Container-local dependencies run on the loopback.
const DEPS_HOST: &str = shared::emulator::LOOPBACK;

/// Where the container's ports come from, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports {
    /// `P`: the container's own ports are `${P}01`, `${P}02`, …
    pub prefix: String,
    pub backend: String,
    pub dashboard: String,
    pub minio: String,
    pub inbucket: String,
    /// `STACK_EMULATOR_MOCK_OAUTH_HOST_PORT`, or `${P}14` when unset or empty.
    pub mock_oauth: String,
}

/// The suffixes the computed block appends to the prefix.
const PREFIX_SUFFIXES: [&str; 3] = ["01", "02", "14"];

impl Ports {
    /// Reads the ports from the inputs, base.env's definitions winning.
    pub fn from_inputs(runtime: &EnvFile, base: &EnvFile) -> Result<Ports> {
        let prefix = required(runtime, base, PORT_PREFIX)?;
        if !is_port_prefix(prefix.value) {
            return Err(prefix.invalid(
                "is not a port prefix: 1 to 3 digits without a leading zero, at most 655, so \
                 that ${P}01, ${P}02 and ${P}14 are ports",
            ));
        }
        let port = |name| -> Result<String> {
            let found = required(runtime, base, name)?;
            found.port()
        };
        let mock_oauth = match lookup(runtime, base, MOCK_OAUTH_PORT) {
            Some(found) if !found.value.is_empty() => found.port()?,
            _ => format!("{}14", prefix.value),
        };
        Ok(Ports {
            prefix: prefix.value.to_string(),
            backend: port(BACKEND_PORT)?,
            dashboard: port(DASHBOARD_PORT)?,
            minio: port(MINIO_PORT)?,
            inbucket: port(INBUCKET_PORT)?,
            mock_oauth,
        })
    }
}

/// A variable's winning definition and where it is.
struct Found<'a> {
    name: &'a str,
    value: &'a str,
    file: &'a str,
    line: usize,
}

impl Found<'_> {
    fn invalid(&self, why: &str) -> Error {
        Error::new(
            format!("{}:{}", self.file, self.line),
            format!("{}={:?} {why}", self.name, self.value),
        )
    }

    fn port(&self) -> Result<String> {
        if is_port(self.value) {
            Ok(self.value.to_string())
        } else {
            Err(self.invalid("is not a port number (1-65535, digits only, no leading zero)"))
        }
    }
}

/// The definition the original's computations saw: base.env's last, else runtime.env's last.
fn lookup<'a>(runtime: &'a EnvFile, base: &'a EnvFile, name: &'a str) -> Option<Found<'a>> {
    [base, runtime].into_iter().find_map(|file| {
        file.entry(name).map(|e| Found {
            name,
            value: &e.value,
            file: file.name(),
            line: e.line,
        })
    })
}

fn required<'a>(runtime: &'a EnvFile, base: &'a EnvFile, name: &'a str) -> Result<Found<'a>> {
    lookup(runtime, base, name).ok_or_else(|| {
        Error::new(
            format!("{} and {}", runtime.name(), base.name()),
            format!("required variable {name} is not set"),
        )
    })
}

/// A TCP port as the host writes it: 1-65535 in decimal, no sign, no leading zero.
pub fn is_port(value: &str) -> bool {
    !value.starts_with('0')
        && value.len() <= 5
        && value.bytes().all(|b| b.is_ascii_digit())
        && value.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p))
}

/// A prefix `P` such that every `${P}NN` the computed block uses is a port.
pub fn is_port_prefix(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 3
        && value.bytes().all(|b| b.is_ascii_digit())
        && PREFIX_SUFFIXES
            .iter()
            .all(|suffix| is_port(&format!("{value}{suffix}")))
}

/// The computed block, in the original's order with the original's values. Each value is a
/// template for [`fill`]: `{p}` is the port prefix, `{d}` the deps host, `{host}` the host
/// folder, `{backend}`, `{dashboard}`, `{minio}` and `{mock_oauth}` the host ports.
const COMPUTED: &[(&str, &str)] = &[
    ("STACK_SKIP_MIGRATIONS", "true"),
    ("STACK_SKIP_SEED_SCRIPT", "true"),
    (PREFIX_VAR.hexclave, "{p}"),
    ("STACK_RUNTIME_WORK_DIR", "/app"),
    ("STACK_LOCAL_EMULATOR_HOST_MOUNT_ROOT", "{host}"),
    ("NEXT_PUBLIC_STACK_API_URL", "http://localhost:{backend}"),
    (
        "NEXT_PUBLIC_STACK_DASHBOARD_URL",
        "http://localhost:{dashboard}",
    ),
    (
        "NEXT_PUBLIC_BROWSER_STACK_API_URL",
        "http://localhost:{backend}",
    ),
    (
        "NEXT_PUBLIC_BROWSER_STACK_DASHBOARD_URL",
        "http://localhost:{dashboard}",
    ),
    ("NEXT_PUBLIC_SERVER_STACK_API_URL", "http://127.0.0.1:{p}02"),
    (
        "NEXT_PUBLIC_SERVER_STACK_DASHBOARD_URL",
        "http://127.0.0.1:{p}01",
    ),
    (
        "NEXT_PUBLIC_STACK_SVIX_SERVER_URL",
        "http://localhost:{backend}",
    ),
    (
        "STACK_DATABASE_CONNECTION_STRING",
        "postgres://postgres:PASSWORD-PLACEHOLDER--uqfEC1hmmv@{d}:5432/stackframe",
    ),
    ("STACK_EMAIL_HOST", "{d}"),
    ("STACK_SVIX_SERVER_URL", "http://{d}:8071"),
    ("STACK_S3_ENDPOINT", "http://{d}:9090"),
    (
        "STACK_S3_PUBLIC_ENDPOINT",
        "http://localhost:{minio}/stack-storage",
    ),
    ("STACK_QSTASH_URL", "http://{d}:8080"),
    ("STACK_CLICKHOUSE_URL", "http://{d}:8123"),
    (
        "STACK_EMAIL_MONITOR_VERIFICATION_CALLBACK_URL",
        "http://localhost:{dashboard}/handler/email-verification",
    ),
    ("STACK_EMAIL_MONITOR_INBUCKET_API_URL", "http://{d}:9001"),
    ("STACK_OAUTH_MOCK_URL", "http://localhost:{mock_oauth}"),
    ("STACK_OAUTH_MOCK_PORT", "{mock_oauth}"),
    ("STACK_FREESTYLE_API_ENDPOINT", "http://{d}:8180"),
    ("STACK_STRIPE_MOCK_PORT", "12111"),
    (
        "NEXT_PUBLIC_STACK_STRIPE_PUBLISHABLE_KEY",
        "pk_test_mock_publishable_key_for_local_emulator",
    ),
    ("BACKEND_PORT", "{p}02"),
    ("DASHBOARD_PORT", "{p}01"),
];

/// The computed block for `ports`.
pub fn computed(ports: &Ports) -> Vec<(&'static str, String)> {
    let values = [
        ("p", ports.prefix.as_str()),
        ("d", DEPS_HOST),
        ("host", shared::emulator::HOST_DIR),
        ("backend", &ports.backend),
        ("dashboard", &ports.dashboard),
        ("minio", &ports.minio),
        ("mock_oauth", &ports.mock_oauth),
    ];
    COMPUTED
        .iter()
        .map(|&(key, template)| (key, fill(template, &values)))
        .collect()
}

/// `template` with each `{name}` of `values` replaced by its value, in one pass (a value is
/// never read as a template).
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let known = after.find('}').and_then(|close| {
            let value = values.iter().find(|(name, _)| *name == &after[..close])?.1;
            Some((value, close))
        });
        match known {
            Some((value, close)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Everything of the output except the keys, validated: rendering cannot fail after this, so
/// no key is written for an output that would not be.
#[derive(Debug, Clone)]
pub struct Plan {
    /// base.env's then runtime.env's entries, as docker env-file lines.
    inputs: String,
    /// The same entries, as `(name, value)`.
    input_entries: Vec<(String, String)>,
    snapshot: bool,
    /// The computed block, as docker env-file lines.
    computed: String,
    /// The same block, as `(name, value)`.
    computed_entries: Vec<(&'static str, String)>,
}

impl Plan {
    pub fn new(runtime: &EnvFile, base: &EnvFile, snapshot: bool) -> Result<Plan> {
        let ports = Ports::from_inputs(runtime, base)?;
        let mut inputs = base.to_docker_env()?;
        inputs.push_str(&runtime.to_docker_env()?);
        let input_entries = [base, runtime]
            .iter()
            .flat_map(|file| file.entries())
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect();
        let computed_entries = computed(&ports);
        let mut block = String::new();
        for (key, value) in &computed_entries {
            envfile::push_docker_line(&mut block, key, value)
                .map_err(|why| Error::new("rendering the computed variables", why))?;
        }
        Ok(Plan {
            inputs,
            input_entries,
            snapshot,
            computed: block,
            computed_entries,
        })
    }

    pub fn snapshot(&self) -> bool {
        self.snapshot
    }

    /// The whole file. Keys are 64 hex characters, and the other values were checked by
    /// [`Plan::new`], so nothing here can break a line.
    pub fn render(&self, keys: &Keys) -> String {
        let mut middle: Vec<(&str, &str)> = vec![
            (PUBLISHABLE_CLIENT_KEY.hexclave, &keys.pck),
            (SECRET_SERVER_KEY.hexclave, &keys.ssk),
            (SUPER_SECRET_ADMIN_KEY, &keys.sak),
        ];
        if self.snapshot {
            middle.push(("CRON_SECRET", CRON_SECRET_PLACEHOLDER));
        }
        let mut out = self.inputs.clone();
        for (name, value) in &middle {
            push_line(&mut out, name, value);
        }
        out.push_str(&self.computed);
        let written = self
            .input_entries
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(middle.iter().copied())
            .chain(self.computed_entries.iter().map(|(k, v)| (*k, v.as_str())));
        for (name, value) in names::aliases(written) {
            push_line(&mut out, name, &value);
        }
        out
    }
}

/// `NAME=value\n`, for names and values already checked.
fn push_line(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push('=');
    out.push_str(value);
    out.push('\n');
}

/// Whether the build env file selects snapshot-build mode: it exists and its last
/// `STACK_EMULATOR_BUILD_SNAPSHOT` is exactly `1`. A malformed file is an error rather than a
/// guess.
pub fn snapshot_mode(build_env: &Path) -> Result<bool> {
    envfile::is_set_in(build_env, SNAPSHOT_VAR, "1")
}

/// Where the output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Print it; mount nothing, write nothing.
    Stdout,
    File(PathBuf),
}

/// Every input of a run; [`Default`] is the original's.
#[derive(Debug, Clone)]
pub struct Options {
    /// The configuration disk.
    pub disk: Disk,
    /// Whether to mount the disk at its mount point (when it is not a mount point already).
    pub mount: bool,
    /// `<mount_point>/runtime.env` when `None`.
    pub runtime_env: Option<PathBuf>,
    /// `<mount_point>/base.env` when `None`.
    pub base_env: Option<PathBuf>,
    pub key_dir: PathBuf,
    pub build_env: PathBuf,
    pub output: Output,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            disk: Disk::new(DEFAULT_LABEL, DEFAULT_MOUNT_POINT),
            mount: true,
            runtime_env: None,
            base_env: None,
            key_dir: keystore::DEFAULT_DIR.into(),
            build_env: DEFAULT_BUILD_ENV.into(),
            output: Output::File(DEFAULT_OUTPUT.into()),
        }
    }
}

impl Options {
    pub fn runtime_env(&self) -> PathBuf {
        self.runtime_env
            .clone()
            .unwrap_or_else(|| self.disk.mount_point.join(RUNTIME_ENV))
    }

    pub fn base_env(&self) -> PathBuf {
        self.base_env
            .clone()
            .unwrap_or_else(|| self.disk.mount_point.join(BASE_ENV))
    }
}

/// What a run did, for the caller to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `None` when mounting was not asked for.
    pub mounted: Option<Mounted>,
    pub snapshot: bool,
    /// Key files that were missing or empty and got a key that was printed but not saved
    /// (`Output::Stdout` only).
    pub unsaved_keys: Vec<PathBuf>,
}

/// Mounts the disk (unless already mounted), renders, and writes the output; `stdout` receives
/// the file for [`Output::Stdout`].
pub fn run(opts: &Options, stdout: &mut dyn Write) -> Result<Report> {
    let to_file = match &opts.output {
        Output::File(path) => Some(path),
        Output::Stdout => None,
    };
    let mounted = if to_file.is_some() && opts.mount {
        Some(opts.disk.mount()?)
    } else {
        None
    };
    if to_file.is_none() {
        explain_unmounted(opts, &opts.runtime_env())?;
        explain_unmounted(opts, &opts.base_env())?;
    }
    let runtime = envfile::read(&opts.runtime_env())?;
    let base = envfile::read(&opts.base_env())?;
    let snapshot = snapshot_mode(&opts.build_env)?;
    let plan = Plan::new(&runtime, &base, snapshot)?;

    if let Some(path) = to_file {
        // Before any key is written: an output that cannot be replaced changes nothing.
        atomic::check_target(path)?;
    }
    let store = KeyStore::new(&opts.key_dir);
    let mut unsaved_keys = Vec::new();
    let keys = match (snapshot, to_file.is_some()) {
        (true, true) => store.write_placeholders()?,
        (true, false) => Keys::placeholders(),
        (false, true) => store.load_or_create()?.keys,
        (false, false) => {
            let loaded = store.load_or_generate_ephemeral()?;
            unsaved_keys = loaded.generated.iter().map(|&k| store.path(k)).collect();
            loaded.keys
        }
    };
    let text = plan.render(&keys);
    match to_file {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                atomic::create_dir_all(dir, 0o755)?;
            }
            atomic::write(path, text.as_bytes(), OUTPUT_MODE)?;
        }
        None => {
            stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
                .context(|| "writing to stdout".to_string())?;
        }
    }
    Ok(Report {
        mounted,
        snapshot,
        unsaved_keys,
    })
}

/// With `--output -` nothing is mounted. When an env file under the mount point is missing
/// because the disk is not mounted there, says so and what to do, naming the disk as the normal
/// path would (or why it was not found); otherwise lets the read report the file.
fn explain_unmounted(opts: &Options, path: &Path) -> Result<()> {
    let mount_point = &opts.disk.mount_point;
    if !opts.mount || path.exists() || !path.starts_with(mount_point) {
        return Ok(());
    }
    if mounts::is_mount_point(mount_point).unwrap_or(true) {
        return Ok(());
    }
    let what = format!("reading {}", path.display());
    let unmounted = format!(
        "{} is not a mount point, and --output - mounts nothing",
        mount_point.display()
    );
    let device = match &opts.disk.device {
        Some(device) => Ok(device.clone()),
        None => blockdev::find_by_label(&opts.disk.label, &opts.disk.lookup),
    };
    Err(match device {
        Ok(device) => Error::new(
            what,
            format!(
                "{unmounted}: mount the {} disk first (mount -o ro {} {}), run render-stack-env \
                 once without --output - (it mounts the disk), or name the files with \
                 --runtime-env and --base-env",
                opts.disk.label,
                device.display(),
                mount_point.display()
            ),
        ),
        Err(err) => Error::new(what, format!("{unmounted}; and {err}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_of_the_computed_block_is_filled() {
        let ports = Ports {
            prefix: "81".into(),
            backend: "8102".into(),
            dashboard: "8101".into(),
            minio: "8121".into(),
            inbucket: "8105".into(),
            mock_oauth: "8114".into(),
        };
        for (key, value) in computed(&ports) {
            assert!(!value.contains(['{', '}']), "{key}={value}");
        }
        let values = [("a", "x{b}"), ("b", "y")];
        assert_eq!(fill("{a}-{b}-{c}-{", &values), "x{b}-y-{c}-{");
    }

    fn env(name: &str, text: &str) -> EnvFile {
        envfile::parse(name, text.as_bytes()).unwrap()
    }

    const RUNTIME: &str = "STACK_EMULATOR_PORT_PREFIX=81\nSTACK_EMULATOR_BACKEND_HOST_PORT=26702\n\
        STACK_EMULATOR_DASHBOARD_HOST_PORT=26701\nSTACK_EMULATOR_MINIO_HOST_PORT=26704\n\
        STACK_EMULATOR_INBUCKET_HOST_PORT=26705\n";

    #[test]
    fn ports_and_defaults() {
        let ports = Ports::from_inputs(&env("r", RUNTIME), &env("b", "")).unwrap();
        assert_eq!(ports.prefix, "81");
        assert_eq!(ports.mock_oauth, "8114");
        let base = env(
            "b",
            "STACK_EMULATOR_MOCK_OAUTH_HOST_PORT=\nSTACK_EMULATOR_PORT_PREFIX=82\n",
        );
        let ports = Ports::from_inputs(&env("r", RUNTIME), &base).unwrap();
        assert_eq!(
            (ports.prefix.as_str(), ports.mock_oauth.as_str()),
            ("82", "8214")
        );
    }

    #[test]
    fn port_rules() {
        for ok in ["1", "80", "8102", "65535"] {
            assert!(is_port(ok), "{ok}");
        }
        for bad in ["", "0", "080", "65536", "99999999999", "+80", "8 0", "８０"] {
            assert!(!is_port(bad), "{bad}");
        }
        for ok in ["1", "81", "655"] {
            assert!(is_port_prefix(ok), "{ok}");
        }
        for bad in ["", "0", "08", "656", "1000", "8a"] {
            assert!(!is_port_prefix(bad), "{bad}");
        }
    }

    #[test]
    fn errors_name_file_line_and_variable() {
        let runtime = env(
            "r",
            &format!("{RUNTIME}STACK_EMULATOR_MINIO_HOST_PORT=9x\n"),
        );
        let err = Ports::from_inputs(&runtime, &env("b", "")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "r:6: STACK_EMULATOR_MINIO_HOST_PORT=\"9x\" is not a port number (1-65535, digits \
             only, no leading zero)"
        );
        let err = Ports::from_inputs(&env("r", "STACK_EMULATOR_PORT_PREFIX=81\n"), &env("b", ""))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "r and b: required variable STACK_EMULATOR_BACKEND_HOST_PORT is not set"
        );
    }

    #[test]
    fn render_orders_sections() {
        let plan = Plan::new(&env("r", RUNTIME), &env("b", "# c\nX=1\n"), true).unwrap();
        let text = plan.render(&Keys::placeholders());
        let keys: Vec<&str> = text.lines().map(|l| l.split('=').next().unwrap()).collect();
        assert_eq!(keys[0], "X");
        assert_eq!(keys[6], "STACK_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY");
        assert_eq!(keys[9], "CRON_SECRET");
        assert_eq!(keys[10], "STACK_SKIP_MIGRATIONS");
        let dashboard = keys.iter().position(|k| *k == "DASHBOARD_PORT").unwrap();
        assert_eq!(
            keys[dashboard + 1..],
            [
                "STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY",
                "STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY",
                "NEXT_PUBLIC_STACK_PORT_PREFIX",
            ]
        );
        let plain = Plan::new(&env("r", RUNTIME), &env("b", ""), false).unwrap();
        assert!(!plain.render(&Keys::placeholders()).contains("CRON_SECRET"));
    }

    #[test]
    fn renamed_variables_are_written_under_both_names_after_the_originals_lines() {
        let keys = Keys::placeholders();
        let original = Plan::new(&env("r", RUNTIME), &env("b", "X=1\n"), false)
            .unwrap()
            .render(&keys);
        let (head, tail) = original
            .split_once("DASHBOARD_PORT=8101\n")
            .expect("the computed block's last line");
        assert!(head.ends_with("BACKEND_PORT=8102\n"));
        assert_eq!(
            tail,
            format!(
                "STACK_SEED_INTERNAL_PROJECT_PUBLISHABLE_CLIENT_KEY={}\n\
                 STACK_SEED_INTERNAL_PROJECT_SECRET_SERVER_KEY={}\n\
                 NEXT_PUBLIC_STACK_PORT_PREFIX=81\n",
                keys.pck, keys.ssk
            )
        );
        // An input under the Stack Auth name stays where it is; the later definition (the
        // computed one) wins for both names.
        let base = env("b", "NEXT_PUBLIC_STACK_PORT_PREFIX=70\n");
        let text = Plan::new(&env("r", RUNTIME), &base, false)
            .unwrap()
            .render(&keys);
        assert!(text.starts_with("NEXT_PUBLIC_STACK_PORT_PREFIX=70\n"));
        assert!(text.ends_with("NEXT_PUBLIC_STACK_PORT_PREFIX=81\n"));
    }
}
