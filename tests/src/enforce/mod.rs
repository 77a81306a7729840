//! Enforcement tests: what the kernel stops, for the gateway's children only.

mod delegation;
mod egress;
mod env;
mod exec;
mod faults;
mod files;
mod outputs;
mod pinned;
mod reload;
mod tamper;

use crate::Test;

pub(crate) fn tests() -> Vec<Test> {
    let mut all = Vec::new();
    all.extend(files::tests());
    all.extend(egress::tests());
    all.extend(exec::tests());
    all.extend(reload::tests());
    all.extend(pinned::tests());
    all.extend(tamper::tests());
    all.extend(faults::tests());
    all.extend(env::tests());
    all.extend(delegation::tests());
    all.extend(outputs::tests());
    all
}
