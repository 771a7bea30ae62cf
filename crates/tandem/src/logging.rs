//! Log setup: human-readable lines by default, JSON with `--log-format json`.

use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

/// The store's Raft library narrates every vote and append at `info`; below `debug` only its
/// warnings are worth an operator's time. Other levels and full directives (`a=b,c`) are
/// taken as given.
fn directives(level: &str) -> String {
    if level.trim().eq_ignore_ascii_case("info") {
        format!("{level},openraft=warn")
    } else {
        level.to_string()
    }
}

pub fn init(format: Format, level: Option<&str>) {
    let filter = match level {
        Some(l) => EnvFilter::new(directives(l)),
        None => {
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(directives("info")))
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        Format::Human => builder.try_init(),
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::directives;

    #[test]
    fn raft_chatter_is_quiet_unless_asked_for() {
        assert_eq!(directives("info"), "info,openraft=warn");
        assert_eq!(directives("error"), "error");
        assert_eq!(directives("debug"), "debug");
        assert_eq!(directives("info,openraft=info"), "info,openraft=info");
        assert_eq!(directives("tandem=debug"), "tandem=debug");
    }
}
