//! Integration tests of openclaw-guard against the running kernel: real daemon, real
//! processes, assertions on what the kernel did. Needs root. Run on the host by
//! `cargo xtask test` and inside QEMU guests by `cargo xtask vm`.
//!
//! Usage: `openclaw-guard-integration [--only PREFIX] [--skip PREFIX] [FILTER...]`
//! (filters: substring match on test names; `--only`/`--skip` split the end-to-end tier
//! on the real gateway, `e2e::`, from the rest).
//! Output, parsed by xtask: `test NAME ... ok|FAILED|skipped: REASON` lines and a final
//! `test result: P passed; F failed; S skipped`.

/// The calling module's tests, each named by its module path and function
/// (`enforce::files::secret_blocked_on_every_route`): a name always finds its code.
macro_rules! named_tests {
    ($($f:ident),* $(,)?) => {
        vec![$($crate::Test {
            name: $crate::test_name(concat!(module_path!(), "::", stringify!($f))),
            run: $f,
        }),*]
    };
}
pub(crate) use named_tests;

mod attribution;
mod audit;
mod e2e;
mod enforce;
mod helpers;
mod record;
mod sensors;
mod support;

// A dependency of the bench binary (one package, one dependency list).
use openclaw_guard as _;
use std::time::Instant;

/// What a test concluded when it did not fail.
pub(crate) enum Outcome {
    Passed,
    /// The kernel lacks what the test needs; the reason is printed.
    Skipped(String),
}

pub(crate) type TestResult = anyhow::Result<Outcome>;

/// A test's name: its path below this crate.
pub(crate) fn test_name(path: &'static str) -> &'static str {
    path.strip_prefix(concat!(module_path!(), "::"))
        .unwrap_or(path)
}

pub(crate) struct Test {
    pub(crate) name: &'static str,
    pub(crate) run: fn() -> TestResult,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("helper") {
        std::process::exit(helpers::main(&args[2..]));
    }
    if args.get(1).map(String::as_str) == Some("bench-e2e") {
        std::process::exit(e2e::bench::main(&args[2..]));
    }
    // Copied as `node` and run as `node .../openclaw/openclaw.mjs gateway ...`: a
    // stand-in gateway started after the guard (found by its exec).
    if args.iter().any(|a| a == "gateway") {
        if let Ok(script) = std::env::var("OCG_STANDIN_SCRIPT") {
            std::process::exit(helpers::standin_gateway(&script));
        }
    }
    let (mut only, mut skip, mut filters) = (Vec::new(), Vec::new(), Vec::new());
    let mut rest = args[1..].iter();
    while let Some(a) = rest.next() {
        match a.as_str() {
            "--only" => only.extend(rest.next().cloned()),
            "--skip" => skip.extend(rest.next().cloned()),
            _ => filters.push(a.clone()),
        }
    }
    let mut tests: Vec<Test> = sensors::tests();
    tests.extend(enforce::tests());
    tests.extend(record::tests());
    tests.extend(attribution::tests());
    tests.extend(audit::tests());
    tests.extend(e2e::tests());
    let selected: Vec<&Test> = tests
        .iter()
        .filter(|t| only.is_empty() || only.iter().any(|p| t.name.starts_with(p.as_str())))
        .filter(|t| !skip.iter().any(|p| t.name.starts_with(p.as_str())))
        .filter(|t| filters.is_empty() || filters.iter().any(|f| t.name.contains(f.as_str())))
        .collect();
    println!("running {} tests", selected.len());
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let mut failures = Vec::new();
    for test in selected {
        let start = Instant::now();
        let result = std::panic::catch_unwind(test.run);
        let secs = start.elapsed().as_secs_f64();
        match result {
            Ok(Ok(Outcome::Passed)) => {
                passed += 1;
                println!("test {} ... ok ({secs:.1}s)", test.name);
            }
            Ok(Ok(Outcome::Skipped(reason))) => {
                skipped += 1;
                println!("test {} ... skipped: {reason}", test.name);
            }
            Ok(Err(e)) => {
                failed += 1;
                println!("test {} ... FAILED ({secs:.1}s)\n    {e:#}", test.name);
                failures.push(test.name);
            }
            Err(_) => {
                failed += 1;
                println!("test {} ... FAILED (panicked)", test.name);
                failures.push(test.name);
            }
        }
    }
    if !failures.is_empty() {
        println!("failures: {}", failures.join(", "));
    }
    println!("test result: {passed} passed; {failed} failed; {skipped} skipped");
    std::process::exit(i32::from(failed > 0));
}
