//! # recon-client
//!
//! The Flight SQL client library and the `recon-cli` command line (`sql`, REPL,
//! `generate`, `refresh`, `status`), DESIGN §8. Not built yet: it arrives with the
//! Flight SQL server it talks to.
