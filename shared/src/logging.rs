//! Logging through `tracing`, never to stdout (stdout carries the CNI result).
//!
//! Level: `CNI_LOG_LEVEL`, else the config's `logLevel`, else `warn`. Destination: `CNI_LOG_FILE`,
//! else the config's `logFile` (appended, mode 0600), else stderr.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

use tracing::level_filters::LevelFilter;

use crate::spec::NetConf;

/// Install the process's subscriber. Called once by the skel; later calls do nothing.
pub fn init(plugin: &str, conf: &NetConf) {
    let level_name = std::env::var("CNI_LOG_LEVEL")
        .ok()
        .or_else(|| conf.log_level.clone())
        .unwrap_or_else(|| "warn".into());
    let level = parse_level(&level_name).unwrap_or(LevelFilter::WARN);
    if level == LevelFilter::OFF {
        return;
    }
    let file = std::env::var("CNI_LOG_FILE")
        .ok()
        .or_else(|| conf.log_file.clone())
        .filter(|f| !f.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false);
    let installed = match file {
        Some(path) => match OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => builder.with_writer(Mutex::new(f)).try_init(),
            Err(e) => {
                let r = builder.with_writer(std::io::stderr).try_init();
                tracing::warn!("{plugin}: cannot open log file {path:?}: {e}; logging to stderr");
                r
            }
        },
        None => builder.with_writer(std::io::stderr).try_init(),
    };
    // Already installed (a second init in the same process) is fine.
    let _ = installed;
}

/// `off`, `error`, `warn`, `info`, `debug`, `trace` (any case).
pub fn parse_level(s: &str) -> Option<LevelFilter> {
    Some(match s.to_ascii_lowercase().as_str() {
        "off" | "none" => LevelFilter::OFF,
        "error" => LevelFilter::ERROR,
        "warn" | "warning" => LevelFilter::WARN,
        "info" => LevelFilter::INFO,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(parse_level("DEBUG"), Some(LevelFilter::DEBUG));
        assert_eq!(parse_level("off"), Some(LevelFilter::OFF));
        assert_eq!(parse_level("loud"), None);
    }
}
