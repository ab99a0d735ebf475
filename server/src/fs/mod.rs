//! Files: the served root and API paths ([`paths::Root`]), whose files a request works on
//! ([`space::Space`], [`space::Spaces`]), and notebook files written atomically with their
//! owner's rights ([`files::LocalNotebook`]).
//!
//! Uses `storage` (a rewritten notebook keeps its entry in the file index) and `http`.

pub mod files;
pub mod paths;
pub mod space;
