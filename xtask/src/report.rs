//! Test counts per environment and the final table.

use std::time::Duration;

use anyhow::Result;

use crate::cmd::Streamed;

/// Counts from `test result:` lines (the runner's and cargo test's), and each
/// `test NAME ... FAILED (..)` line with the reason the runner prints under it.
#[derive(Default)]
pub(crate) struct Counts {
    pub(crate) passed: u32,
    pub(crate) failed: u32,
    pub(crate) skipped: u32,
    /// `NAME: first line of the reason`, repeated under the final table because CI
    /// logs are often read from the tail only.
    pub(crate) failing: Vec<String>,
    /// How many summary lines were seen; 0 means the runner did not finish.
    pub(crate) summaries: u32,
}

pub(crate) fn parse_results(lines: &[String]) -> Counts {
    let mut counts = Counts::default();
    let mut lines = lines.iter().map(|l| l.trim()).peekable();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.find("test result:").map(|at| &line[at + 12..]) {
            counts.summaries += 1;
            for part in rest.split([';', '.']) {
                let mut words = part.split_whitespace();
                let (Some(n), Some(what)) = (words.next(), words.next()) else {
                    continue;
                };
                let Ok(n) = n.parse::<u32>() else { continue };
                match what {
                    "passed" => counts.passed += n,
                    "failed" => counts.failed += n,
                    // cargo test says ignored; the runner says skipped.
                    "skipped" | "ignored" => counts.skipped += n,
                    _ => {}
                }
            }
        } else if let Some((name, after)) = line
            .strip_prefix("test ")
            .and_then(|l| l.split_once(" ... FAILED"))
        {
            // The runner prints the reason on the next line; cargo test prints its
            // panics later, so it gets the name only.
            let reason = match lines.peek() {
                Some(next) if !next.is_empty() && !next.starts_with("test ") => {
                    format!(": {next}")
                }
                _ => after.trim().to_owned(),
            };
            counts.failing.push(format!("{name}{reason}"));
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_tests_named_with_their_reason() {
        let lines: Vec<String> = [
            "[6.1] test a::b ... ok (1.0s)",
            "[6.1] test a::c ... FAILED (4.2s)",
            "[6.1]     expected EPERM, got Ok",
            "[6.1] test a::d ... FAILED (panicked)",
            "[6.1] test result: 1 passed; 2 failed; 0 skipped",
        ]
        .iter()
        .map(|l| l.trim_start_matches("[6.1]").to_owned())
        .collect();
        let counts = parse_results(&lines);
        assert_eq!((counts.passed, counts.failed, counts.summaries), (1, 2, 1));
        assert_eq!(
            counts.failing,
            ["a::c: expected EPERM, got Ok", "a::d(panicked)"]
        );
    }
}

/// One row of the final table.
pub(crate) struct EnvResult {
    pub(crate) name: String,
    pub(crate) kernel: String,
    pub(crate) lsm: String,
    pub(crate) counts: Counts,
    pub(crate) elapsed: Duration,
    /// A failure outside the test counts (build, panic, hang, missing verdict).
    pub(crate) error: Option<String>,
}

impl EnvResult {
    pub(crate) fn from_unit_tests(result: Result<Streamed>, elapsed: Duration) -> Self {
        let (counts, error) = match result {
            Ok(out) => {
                let counts = parse_results(&out.lines);
                let error = (!out.status.success() && counts.failed == 0)
                    .then(|| format!("cargo test failed ({})", out.status));
                (counts, error)
            }
            Err(err) => (Counts::default(), Some(format!("{err:#}"))),
        };
        Self {
            name: "unit".into(),
            kernel: "-".into(),
            lsm: "-".into(),
            counts,
            elapsed,
            error,
        }
    }

    /// A guest's row from its console `lines` and its `verdict` (the runner's exit
    /// code, or why there is none).
    pub(crate) fn from_guest(
        name: &str,
        kernel: String,
        lsm: String,
        lines: &[String],
        elapsed: Duration,
        verdict: Result<i32, String>,
    ) -> Self {
        let counts = parse_results(lines);
        let error = match verdict {
            Err(why) => Some(why),
            Ok(_) if counts.summaries == 0 => Some("the runner printed no summary".into()),
            Ok(code) if code != 0 && counts.failed == 0 => {
                Some(format!("the runner exited {code}"))
            }
            Ok(_) => None,
        };
        Self {
            name: name.into(),
            kernel,
            lsm,
            counts,
            elapsed,
            error,
        }
    }

    fn passed(&self) -> bool {
        self.error.is_none() && self.counts.failed == 0
    }
}

#[derive(Default)]
pub(crate) struct Table {
    rows: Vec<EnvResult>,
}

impl Table {
    pub(crate) fn push(&mut self, row: EnvResult) {
        self.rows.push(row);
    }

    pub(crate) fn extend(&mut self, rows: impl IntoIterator<Item = EnvResult>) {
        self.rows.extend(rows);
    }

    pub(crate) fn all_passed(&self) -> bool {
        self.rows.iter().all(EnvResult::passed)
    }

    pub(crate) fn print(&self) {
        let kernel_w = self
            .rows
            .iter()
            .map(|r| r.kernel.len())
            .max()
            .unwrap_or(0)
            .max(6);
        let lsm_w = self
            .rows
            .iter()
            .map(|r| r.lsm.len())
            .max()
            .unwrap_or(0)
            .max(3);
        println!();
        println!(
            "{:<6}  {:<kernel_w$}  {:<lsm_w$}  {:>6}  {:>6}  {:>7}  {:>7}  result",
            "env", "kernel", "LSM", "passed", "failed", "skipped", "seconds"
        );
        for r in &self.rows {
            println!(
                "{:<6}  {:<kernel_w$}  {:<lsm_w$}  {:>6}  {:>6}  {:>7}  {:>7.1}  {}",
                r.name,
                r.kernel,
                r.lsm,
                r.counts.passed,
                r.counts.failed,
                r.counts.skipped,
                r.elapsed.as_secs_f64(),
                if r.passed() { "ok" } else { "FAIL" }
            );
        }
        for r in self.rows.iter().filter(|r| !r.passed()) {
            if !r.counts.failing.is_empty() {
                for failing in &r.counts.failing {
                    println!("{}: FAILED {failing}", r.name);
                }
            }
            if let Some(error) = &r.error {
                println!("{}: {error}", r.name);
            }
        }
    }
}
