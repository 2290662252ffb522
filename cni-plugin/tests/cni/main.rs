//! Privileged integration tests of skein-cni: each test builds its own test bed (node
//! namespaces on a fabric) and pod namespaces, calls the real binary as a runtime does,
//! and checks what a user would see: addresses, TCP reachability, files, links.

#![allow(dead_code, reason = "the driver serves several test modules")]

mod driver;

mod add_del;
mod bad_input;
mod chaining;
mod concurrency;
mod kill9;
mod options;
mod verbs;
