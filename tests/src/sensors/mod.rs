//! One module per sensor, named after its kernel hook, holding that sensor's tests.

mod exec;
mod file_open;

use crate::Test;

pub(crate) fn tests() -> Vec<Test> {
    let mut all = Vec::new();
    all.extend(exec::tests());
    all.extend(file_open::tests());
    all
}
