//! Test harness: starts a real server on port 0 over a temp directory.
