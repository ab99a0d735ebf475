//! Rooms and kernels at run time: the registry of open rooms ([`registry::Rooms`], by
//! [`registry::RoomKey`]), admission of a websocket to a room, the socket loop, the kernels and
//! sessions ([`kernels::Kernels`]), and rights that change while people are connected.
//!
//! Uses `access`, `storage`, `fs` and `http`, and takes the server's `AppState` (a connection
//! touches all of them); never `api`.

pub mod admission;
pub mod kernels;
pub mod keyed;
pub mod registry;
pub mod rights;
pub mod socket;
