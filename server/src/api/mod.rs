//! Route handlers.
pub mod contents;
pub mod kernels;
pub mod people;
pub mod sharing;
pub mod view;
pub mod web;
