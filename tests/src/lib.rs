//! End-to-end tests (broker + server + Rust and Python Flight SQL clients) live here; see the issues that add the server.
