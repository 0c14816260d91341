//! Stream URLs and authentication (placeholder; being written).
