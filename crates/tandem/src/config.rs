//! The tandem config file: parsed (unknown keys are errors), then validated as a whole before
//! anything is bound. Every error names the file, the line and the key.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tandem_cluster::{ClusterConfig, NodeConfig, ServiceConfig};
use tandem_core::validate::{segments, Issue, Segment};
use tandem_core::HumanDuration;
use tandem_proxy::{BackendConfig, FrontendConfig};

/// The whole configuration of one node.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub admin: Option<AdminConfig>,
    #[serde(default)]
    pub runtime: RuntimeConfig,
    #[serde(default)]
    pub frontend: Vec<FrontendConfig>,
    #[serde(default)]
    pub backend: Vec<BackendConfig>,
    pub node: Option<NodeConfig>,
    pub cluster: Option<ClusterConfig>,
    pub service: Option<ServiceConfig>,
    #[serde(default)]
    pub notify: Vec<crate::notify::NotifyConfig>,
    #[serde(default)]
    pub vip: Vec<tandem_vrrp::VipConfig>,
}

/// `[admin]`: the HTTP API for status, metrics and control.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: String,
    /// File holding the bearer token that mutating endpoints require.
    pub token_file: Option<PathBuf>,
    /// Accept `POST /faults` (failover drills from another host). Off by default.
    #[serde(default)]
    pub allow_faults: bool,
}

/// `[runtime]`: process-wide settings (a restart applies changes).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Worker threads; the default is one per CPU.
    pub threads: Option<usize>,
    /// How long a graceful stop waits for requests in flight.
    #[serde(default = "default_drain")]
    pub drain_timeout: HumanDuration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            threads: None,
            drain_timeout: default_drain(),
        }
    }
}

fn default_drain() -> HumanDuration {
    HumanDuration::from_secs(10)
}

/// A config that could not be used, with where and why.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Located>,
}

/// One problem at a place in the file.
#[derive(Debug)]
pub struct Located {
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.file.display())?;
            if let Some(line) = p.line {
                write!(f, ":{line}")?;
            }
            if p.key.is_empty() {
                write!(f, ": {}", p.message)?;
            } else {
                write!(f, ": {}: {}", p.key, p.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Read, parse and validate `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            problems: vec![Located {
                line: None,
                key: String::new(),
                message: format!("cannot read: {e}"),
            }],
        })?;
        Self::parse(path, &text)
    }

    /// Parse and validate `text`, read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let err = |problems| ConfigError {
            file: path.to_path_buf(),
            problems,
        };
        let mut config: Config =
            toml::from_str(text).map_err(|e| err(vec![parse_error(text, &e)]))?;
        // Relative file names are relative to the config file.
        if let Some(n) = &mut config.node {
            n.data_dir = relative_to(path, &n.data_dir);
        }
        if let Some(c) = &mut config.cluster {
            c.secret_file = relative_to(path, &c.secret_file);
        }
        let issues = config.validate(path);
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(err(issues.into_iter().map(|i| locate(text, i)).collect()))
        }
    }

    fn validate(&self, path: &Path) -> Vec<Issue> {
        let mut issues = tandem_proxy::config::validate(&self.frontend, &self.backend);
        if let Some(admin) = &self.admin {
            if admin.listen.parse::<SocketAddr>().is_err() {
                issues.push(Issue::new(
                    "admin.listen",
                    format!("{:?} is not an address:port", admin.listen),
                ));
            }
            if let Some(tf) = &admin.token_file {
                if let Err(e) = read_token(&relative_to(path, tf)) {
                    issues.push(Issue::new("admin.token_file", e));
                }
            }
        }
        if self.runtime.threads == Some(0) {
            issues.push(Issue::new("runtime.threads", "must be at least 1"));
        }
        issues.extend(crate::notify::validate(&self.notify));
        issues.extend(tandem_cluster::config::validate(
            self.node.as_ref(),
            self.cluster.as_ref(),
            self.service.as_ref(),
        ));
        issues.extend(tandem_vrrp::config::validate(
            &self.vip,
            self.node.is_some() && self.cluster.is_some(),
        ));
        if self.admin.is_none()
            && self.frontend.is_empty()
            && self.cluster.is_none()
            && self.vip.is_empty()
        {
            issues.push(Issue::new(
                "",
                "nothing to run: add [admin], a [[frontend]], [cluster] or a [[vip]]",
            ));
        }
        issues
    }

    /// The admin token, read from `[admin] token_file` (resolved against the config's folder).
    pub fn admin_token(&self, config_path: &Path) -> Result<Option<String>, String> {
        match self.admin.as_ref().and_then(|a| a.token_file.as_ref()) {
            Some(tf) => read_token(&relative_to(config_path, tf)).map(Some),
            None => Ok(None),
        }
    }
}

fn relative_to(config_path: &Path, file: &Path) -> PathBuf {
    if file.is_absolute() {
        file.to_path_buf()
    } else {
        config_path.parent().unwrap_or(Path::new(".")).join(file)
    }
}

/// A token file holds one line of at least 16 characters.
pub fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let token = text.trim().to_string();
    if token.len() < 16 || token.contains(char::is_whitespace) {
        return Err(format!(
            "{}: the token must be one word of at least 16 characters",
            path.display()
        ));
    }
    Ok(token)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

fn parse_error(text: &str, e: &toml::de::Error) -> Located {
    let span = e.span();
    let line = span.clone().map(|s| line_of(text, s.start));
    let key = span.map(|s| key_at(text, s.start)).unwrap_or_default();
    Located {
        line,
        key,
        message: e.message().to_string(),
    }
}

/// The dotted key of the `key = value` line holding `offset`, with its table, e.g.
/// `backend.health.interval`; the text at `offset` when it is not on such a line.
fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = &text[start..end];
    let Some((key, _)) = line.split_once('=') else {
        // A table header or a stray word: name what is there.
        return line.trim().chars().take(64).collect();
    };
    let key = key.trim();
    let table = text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_string(),
    }
}

/// Find the line of an issue's key path in the source text.
fn locate(text: &str, issue: Issue) -> Located {
    let line = toml_edit::ImDocument::parse(text.to_string())
        .ok()
        .and_then(|doc| span_of(doc.as_item(), &segments(&issue.path)))
        .map(|offset| line_of(text, offset));
    Located {
        line,
        key: issue.path,
        message: issue.message,
    }
}

fn span_of(root: &toml_edit::Item, path: &[Segment<'_>]) -> Option<usize> {
    root.as_table_like().and_then(|t| span_in(t, path))
}

/// Offset of the deepest part of `path` found under `table`.
fn span_in(table: &dyn toml_edit::TableLike, path: &[Segment<'_>]) -> Option<usize> {
    let (Segment::Key(k), rest) = path.split_first()? else {
        return None;
    };
    let (key, item) = table.get_key_value(k)?;
    let here = key.span().map(|s| s.start);
    let deeper = match rest.split_first() {
        None => None,
        Some((Segment::Index(n), after)) => {
            if let Some(t) = item.as_array_of_tables().and_then(|a| a.get(*n)) {
                span_in(t, after).or(t.span().map(|s| s.start))
            } else {
                let v = item.as_array().and_then(|a| a.get(*n))?;
                v.as_inline_table()
                    .and_then(|t| span_in(t, after))
                    .or(v.span().map(|s| s.start))
            }
        }
        Some(_) => item.as_table_like().and_then(|t| span_in(t, rest)),
    };
    deeper.or(here)
}

#[cfg(test)]
mod tests;
