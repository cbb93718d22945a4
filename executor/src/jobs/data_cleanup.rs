//! (in progress)
use crate::tasks::TaskRegistry;

pub fn register(_r: &mut TaskRegistry) {}
