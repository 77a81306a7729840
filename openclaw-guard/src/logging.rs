//! The daemon's diagnostics on stderr, through the `log` facade: one line each,
//! `openclaw-guard: MESSAGE` whatever the level (what scripts and the tests read).
//! Levels filter (`OPENCLAW_GUARD_LOG=warn`, default `info`), and under systemd
//! (stderr connected to the journal, `JOURNAL_STREAM` set) each line starts with its
//! syslog priority (`<4>` for a warning), which journald takes as the entry's
//! priority: `journalctl -u openclaw-guard -p warning` shows the warnings and errors.

use std::io::Write as _;

/// The environment variable holding the filter (`error`, `warn`, `info`, `debug`).
pub const FILTER_ENV: &str = "OPENCLAW_GUARD_LOG";

/// Installs the logger; a second call (tests) changes nothing.
pub fn init() {
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let _ = env_logger::Builder::new()
        .filter_level(log::LevelFilter::Info)
        .parse_env(env_logger::Env::new().filter(FILTER_ENV))
        .target(env_logger::Target::Stderr)
        .format(move |buf, record| {
            if journald {
                write!(buf, "<{}>", priority(record.level()))?;
            }
            writeln!(buf, "openclaw-guard: {}", record.args())
        })
        .try_init();
}

/// sd-daemon(3) priority of a level.
fn priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(super::priority(log::Level::Error), 3);
        assert_eq!(super::priority(log::Level::Warn), 4);
        assert_eq!(super::priority(log::Level::Info), 6);
    }
}
