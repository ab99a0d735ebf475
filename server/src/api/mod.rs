//! The route handlers: each reads the request, asks the layers below, and shapes the answer
//! (Jupyter's JSON where Jupyter has an API). Nothing imports `api` but the router in `lib.rs`.

pub mod collaboration;
pub mod contents;
pub mod kernels;
pub mod login;
pub mod people;
pub mod sharing;
pub mod view;
pub mod web;
