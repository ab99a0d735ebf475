//! Files.
pub mod files;
pub mod paths;
pub mod space;
