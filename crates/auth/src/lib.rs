//! Authentication and authorization for Cairn's public API (issue 18, D85-D89,
//! docs/security.md), modelled on etcd's auth.
//!
//! - [`KeyRange`], [`Permission`]: what a role grants, on a key, a prefix or a range.
//! - [`AuthState`]: users, roles, whether auth is on, and the cluster's token secret; the
//!   coordinator keeps it in its replicated metadata and every gateway holds a copy.
//!   [`AuthState::check`] decides whether a user may make an access.
//! - [`Change`]: one user or role management command and [`AuthState::apply`], the pure
//!   function the coordinator runs before it writes the new state.
//! - [`password`]: argon2 hashes; [`token`]: HMAC-SHA256-signed tokens with an expiry.
//!
//! This crate does no I/O and must not depend on a server crate; gateways and the
//! coordinator call it, and it converts to and from the protocol's messages ([`convert`]).

mod change;
pub mod convert;
mod error;
pub mod password;
mod permission;
mod state;
pub mod token;

pub use change::Change;
pub use change::{check_name, NAME_BYTES_MAX};
pub use error::{AuthError, Result};
pub use permission::{Access, KeyRange, Permission, PermissionKind};
pub use state::{AuthState, Role, User, ROOT, SECRET_BYTES};
