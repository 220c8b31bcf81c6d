//! `lakehouse doctor`: checks a deployment end to end and says how to fix
//! what fails — the config, key and token file permissions, the store (a real
//! write, read and delete), the embedder, DuckDB, and every registered
//! provider (it must list its models).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use crate::config::Config;

/// How long one provider may take to list its models.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// What to do, when the status is not ok.
    pub fix: String,
}

impl Check {
    fn ok(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: Status::Ok,
            detail: detail.into(),
            fix: String::new(),
        }
    }

    fn warn(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: Status::Warn,
            detail: detail.into(),
            fix: fix.into(),
        }
    }

    fn fail(name: impl Into<String>, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: Status::Fail,
            detail: detail.into(),
            fix: fix.into(),
        }
    }
}

/// Every check, in order. A config that cannot be read stops the rest.
pub async fn run(config_path: &Path) -> Vec<Check> {
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            return vec![Check::fail(
                "config",
                e.to_string(),
                format!(
                    "fix {} (the key and reason are above); lakehouse.toml in the repository lists every key with its default",
                    config_path.display()
                ),
            )];
        }
    };
    let mut checks = vec![Check::ok(
        "config",
        format!("{} is valid", config_path.display()),
    )];
    checks.extend(secret_files(&config));
    checks.push(match crate::auth::Auth::load(&config.auth) {
        Err((key, reason)) => Check::fail("auth", format!("{key}: {reason}"), "fix that [auth] entry"),
        Ok(auth) => match auth.exposure_error(config.server.listen) {
            Some(message) => Check::fail("auth", message, "add an admin token under [[auth.tokens]]"),
            None if auth.enabled() => Check::ok("auth", "tokens loaded"),
            None => Check::warn(
                "auth",
                "no tokens: every route is open to whoever can connect",
                "fine on loopback; before exposing the server add [[auth.tokens]] (see the README's production guide)",
            ),
        },
    });
    checks.push(store_check(&config).await);
    checks.push(embedder_check(&config).await);
    checks.extend(provider_checks(&config).await);
    checks
}

/// Key and token files: present, and readable by the owner only.
fn secret_files(config: &Config) -> Vec<Check> {
    let mut files: Vec<(String, PathBuf)> = config
        .provider_settings()
        .into_iter()
        .filter(|p| p.enabled)
        .filter_map(|p| p.key.map(|k| (format!("key {}", p.name), k.file)))
        .collect();
    files.extend(config.auth.tokens.iter().filter_map(|t| {
        t.token_file
            .clone()
            .map(|f| (format!("token {}", t.name), f))
    }));
    files
        .into_iter()
        .map(|(name, path)| match std::fs::metadata(&path) {
            Err(_) => Check::warn(
                name,
                format!(
                    "{} is missing: that provider is not registered",
                    path.display()
                ),
                "create it (see secrets/*.env.example) if you use that provider",
            ),
            Ok(meta) => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = meta.permissions().mode() & 0o777;
                    if mode & 0o077 != 0 {
                        return Check::fail(
                            name,
                            format!(
                                "{} is mode {mode:o}: others can read the secret",
                                path.display()
                            ),
                            format!("chmod 600 {}", path.display()),
                        );
                    }
                }
                #[cfg(not(unix))]
                let _ = meta;
                Check::ok(name, format!("{} (mode 600)", path.display()))
            }
        })
        .collect()
}

/// Opens the store, writes, reads back and deletes a probe object, and runs DuckDB.
async fn store_check(config: &Config) -> Check {
    let where_ = format!("{:?}", config.store);
    let store = match crate::registry::open_store(config).await {
        Ok(store) => store,
        Err(e) => {
            return Check::fail(
                "store",
                format!("cannot open the store: {e}"),
                "check [store]: the folder must exist and be writable, or the S3 bucket, endpoint and AWS_* credentials must be right",
            );
        }
    };
    let key = format!("_doctor/probe-{:016x}", fastrand::u64(..));
    let payload = Bytes::from_static(b"lakehouse doctor probe");
    let objects = store.objects();
    let round_trip = async {
        objects.put(&key, payload.clone()).await?;
        let back = objects.get(&key).await?;
        objects.delete(&key).await?;
        Ok::<_, lakehouse_retrieval::StoreError>(back == payload)
    }
    .await;
    match round_trip {
        Ok(true) => {}
        Ok(false) => {
            return Check::fail(
                "store",
                "the probe object came back different",
                "check the store backend's consistency",
            );
        }
        Err(e) => {
            return Check::fail(
                "store",
                format!("write/read/delete of a probe object failed: {e}"),
                "make the store writable by this user (local: the folder's owner and mode; S3: the credentials' policy)",
            );
        }
    }
    let corpora = match store.corpora().await {
        Ok(c) => c.len(),
        Err(e) => {
            return Check::fail(
                "store",
                format!("cannot read the catalog: {e}"),
                "look at _catalog/ in the store",
            );
        }
    };
    if let Err(e) = store.query("SELECT 42 AS answer").await {
        return Check::fail(
            "store",
            format!("DuckDB cannot run a query: {e}"),
            "see the error; the binary bundles DuckDB, so this is a bug worth reporting",
        );
    }
    let short: String = where_.chars().take(80).collect();
    Check::ok(
        "store",
        format!("writable, {corpora} corpora, DuckDB answers ({short})"),
    )
}

async fn embedder_check(config: &Config) -> Check {
    let started = Instant::now();
    let result = async {
        let embedders = crate::registry::build_embedders(config)?;
        embedders
            .embed(
                lakehouse_retrieval::embed::LOCAL,
                &["doctor probe".to_owned()],
            )
            .await
    }
    .await;
    match result {
        Ok(vectors) => Check::ok(
            "embedder",
            format!(
                "local embedder loaded, {} dimensions, {} ms",
                vectors.first().map_or(0, Vec::len),
                started.elapsed().as_millis()
            ),
        ),
        Err(e) => Check::fail(
            "embedder",
            format!("the local embedder failed: {e}"),
            "the model ships in the binary; report this with the error",
        ),
    }
}

/// Each provider: unregistered ones say why; registered ones must list their models.
async fn provider_checks(config: &Config) -> Vec<Check> {
    let registry = match crate::registry::build_registry(config) {
        Ok(r) => r,
        Err(e) => {
            return vec![Check::fail(
                "providers",
                e.to_string(),
                "fix the [providers] section",
            )];
        }
    };
    let mut checks = Vec::new();
    for status in registry.statuses() {
        let name = format!("provider {}", status.name);
        if let Some(reason) = &status.reason {
            checks.push(Check::warn(
                name,
                format!("not registered: {reason}"),
                "add its key file to use it (secrets/README.md)",
            ));
        }
    }
    let listings = futures::future::join_all(registry.providers().map(|p| async move {
        let result = tokio::time::timeout(PROVIDER_TIMEOUT, p.list_models()).await;
        (p.name().to_owned(), result)
    }))
    .await;
    for (provider, result) in listings {
        let name = format!("provider {provider}");
        checks.push(match result {
            Ok(Ok(models)) => Check::ok(name, format!("reachable, {} models", models.len())),
            Ok(Err(e)) => Check::fail(
                name,
                e.to_string(),
                format!("check providers.{provider}.base_url, the network path to it, and its key"),
            ),
            Err(_) => Check::fail(
                name,
                format!("no model list within {PROVIDER_TIMEOUT:?}"),
                format!("check that providers.{provider}.base_url is reachable from this host"),
            ),
        });
    }
    checks
}

/// The report as an aligned table.
pub fn render(checks: &[Check]) -> String {
    let width = checks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!("{:<width$}  {:<6}  DETAIL\n", "CHECK", "STATUS");
    for c in checks {
        let status = match c.status {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        out.push_str(&format!("{:<width$}  {status:<6}  {}\n", c.name, c.detail));
        if !c.fix.is_empty() {
            out.push_str(&format!("{:<width$}  {:<6}  fix: {}\n", "", "", c.fix));
        }
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warned = checks.iter().filter(|c| c.status == Status::Warn).count();
    out.push_str(&format!(
        "\n{failed} failed, {warned} warnings, {} checks\n",
        checks.len()
    ));
    out
}

/// Whether any check failed.
pub fn failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.status == Status::Fail)
}
