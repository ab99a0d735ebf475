//! Rooms.
pub mod socket;
