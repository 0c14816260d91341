//! An embedded local stream server for tests (placeholder; being written).
