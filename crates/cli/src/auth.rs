//! `cairnctl user`, `role` and `auth`: the commands, the credentials of `--user`, and how
//! their answers print. Passwords are never echoed: they come after a colon, from
//! `CAIRN_PASSWORD`, or from a prompt on the terminal.

use crate::args::{AuthCommand, PermissionKeys, PermissionKindArg, RoleCommand, UserCommand};
use crate::output::bytes_cell;
use crate::table::table;
use cairn_client::proto::auth_change_request::Op;
use cairn_client::{proto, Client, Credentials, Error};
use serde_json::{json, Value};

/// The environment variable `--user NAME` takes its password from.
pub const PASSWORD_ENV: &str = "CAIRN_PASSWORD";

/// What an auth command answered.
#[derive(Clone, Debug, PartialEq)]
pub enum AuthReport {
    /// A change was written: what it did, and the auth revision.
    Changed {
        done: String,
        revision: u64,
    },
    Status(proto::AuthStatusResponse),
    Users(Vec<proto::User>),
    Roles(Vec<proto::Role>),
}

/// The credentials of `--user NAME[:PASSWORD]`.
pub fn credentials(user: &str) -> Result<Credentials, String> {
    let (name, password) = match user.split_once(':') {
        Some((name, password)) => (name.to_string(), password.to_string()),
        None => (user.to_string(), password_of(user)?),
    };
    if name.is_empty() || password.is_empty() {
        return Err("--user needs a user name and a non-empty password".into());
    }
    Ok(Credentials::new(name, password))
}

fn password_of(user: &str) -> Result<String, String> {
    if let Ok(password) = std::env::var(PASSWORD_ENV) {
        return Ok(password);
    }
    rpassword::prompt_password(format!("Password of {user}: ")).map_err(|error| {
        format!("cannot read the password of {user} ({error}): set {PASSWORD_ENV} or pass --user {user}:PASSWORD")
    })
}

/// A new password for `user add` and `user passwd`: after the colon, else prompted twice.
fn new_password(name: &str) -> Result<(String, String), Error> {
    if let Some((name, password)) = name.split_once(':') {
        return Ok((name.to_string(), password.to_string()));
    }
    let ask = |prompt: String| {
        rpassword::prompt_password(prompt).map_err(|error| Error::InvalidArgument {
            field: "password".into(),
            reason: format!("cannot read it ({error}): pass NAME:PASSWORD"),
        })
    };
    let first = ask(format!("New password of {name}: "))?;
    let again = ask("Again: ".to_string())?;
    if first != again {
        return Err(Error::InvalidArgument {
            field: "password".into(),
            reason: "the two passwords differ".into(),
        });
    }
    Ok((name.to_string(), first))
}

fn permission(kind: Option<PermissionKindArg>, keys: &PermissionKeys) -> proto::Permission {
    let key = keys.key.clone().into_bytes();
    let range_end = if keys.prefix {
        // Every key beginning with KEY; an empty or all-0xff prefix runs to the end ("\0").
        prefix_end(&key).unwrap_or_else(|| vec![0])
    } else if keys.from_key {
        vec![0]
    } else {
        keys.end.clone().map(String::into_bytes).unwrap_or_default()
    };
    let kind = match kind {
        Some(PermissionKindArg::Read) | None => proto::permission::Kind::Read,
        Some(PermissionKindArg::Write) => proto::permission::Kind::Write,
        Some(PermissionKindArg::Readwrite) => proto::permission::Kind::Readwrite,
    };
    proto::Permission {
        kind: kind as i32,
        key,
        range_end,
    }
}

fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

async fn change(
    client: &Client,
    request: proto::AuthChangeRequest,
    done: String,
) -> Result<AuthReport, Error> {
    let revision = client.auth_change(request).await?;
    Ok(AuthReport::Changed { done, revision })
}

fn request(op: Op) -> proto::AuthChangeRequest {
    proto::AuthChangeRequest {
        op: op as i32,
        ..Default::default()
    }
}

pub async fn user(client: &Client, command: &UserCommand) -> Result<AuthReport, Error> {
    match command {
        UserCommand::Add { name, no_password } => {
            let (name, password) = if *no_password {
                (name.clone(), String::new())
            } else {
                new_password(name)?
            };
            let done = format!("user {name} added");
            let message = proto::AuthChangeRequest {
                user: name,
                password,
                ..request(Op::UserAdd)
            };
            change(client, message, done).await
        }
        UserCommand::Delete { name } => {
            let message = proto::AuthChangeRequest {
                user: name.clone(),
                ..request(Op::UserDelete)
            };
            change(client, message, format!("user {name} deleted")).await
        }
        UserCommand::Passwd { name } => {
            let (name, password) = new_password(name)?;
            let done = format!("password of {name} changed");
            let message = proto::AuthChangeRequest {
                user: name,
                password,
                ..request(Op::UserChangePassword)
            };
            change(client, message, done).await
        }
        UserCommand::GrantRole { user, role } => {
            let message = proto::AuthChangeRequest {
                user: user.clone(),
                role: role.clone(),
                ..request(Op::UserGrantRole)
            };
            change(client, message, format!("role {role} granted to {user}")).await
        }
        UserCommand::RevokeRole { user, role } => {
            let message = proto::AuthChangeRequest {
                user: user.clone(),
                role: role.clone(),
                ..request(Op::UserRevokeRole)
            };
            change(client, message, format!("role {role} revoked from {user}")).await
        }
        UserCommand::List => Ok(AuthReport::Users(listed(client).await?.users)),
    }
}

pub async fn role(client: &Client, command: &RoleCommand) -> Result<AuthReport, Error> {
    match command {
        RoleCommand::Add { name } => {
            let message = proto::AuthChangeRequest {
                role: name.clone(),
                ..request(Op::RoleAdd)
            };
            change(client, message, format!("role {name} added")).await
        }
        RoleCommand::Delete { name } => {
            let message = proto::AuthChangeRequest {
                role: name.clone(),
                ..request(Op::RoleDelete)
            };
            change(client, message, format!("role {name} deleted")).await
        }
        RoleCommand::GrantPermission { role, kind, keys } => {
            let permission = permission(Some(*kind), keys);
            let done = format!("role {role} may now {}", permission_text(&permission));
            let message = proto::AuthChangeRequest {
                role: role.clone(),
                permission: Some(permission),
                ..request(Op::RoleGrantPermission)
            };
            change(client, message, done).await
        }
        RoleCommand::RevokePermission { role, keys } => {
            let permission = permission(None, keys);
            let done = format!(
                "role {role} no longer has a permission on {}",
                keys_text(&permission)
            );
            let message = proto::AuthChangeRequest {
                role: role.clone(),
                permission: Some(permission),
                ..request(Op::RoleRevokePermission)
            };
            change(client, message, done).await
        }
        RoleCommand::List => Ok(AuthReport::Roles(listed(client).await?.roles)),
    }
}

pub async fn auth(client: &Client, command: &AuthCommand) -> Result<AuthReport, Error> {
    match command {
        AuthCommand::Enable => change(client, request(Op::AuthEnable), "auth enabled".into()).await,
        AuthCommand::Disable => {
            change(client, request(Op::AuthDisable), "auth disabled".into()).await
        }
        AuthCommand::Status => Ok(AuthReport::Status(client.auth_status().await?)),
    }
}

/// The status with its lists, which only root (or anyone while auth is off) gets.
async fn listed(client: &Client) -> Result<proto::AuthStatusResponse, Error> {
    let status = client.auth_status().await?;
    if !status.listed {
        return Err(Error::Rejected {
            code: cairn_client::Code::PermissionDenied,
            message: "listing users and roles needs the root role".into(),
        });
    }
    Ok(status)
}

fn kind_text(kind: i32) -> &'static str {
    match proto::permission::Kind::try_from(kind) {
        Ok(proto::permission::Kind::Read) => "read",
        Ok(proto::permission::Kind::Write) => "write",
        Ok(proto::permission::Kind::Readwrite) => "readwrite",
        Err(_) => "unknown",
    }
}

/// The keys of a permission as etcdctl shows them.
fn keys_text(permission: &proto::Permission) -> String {
    let key = bytes_cell(&permission.key);
    match permission.range_end.as_slice() {
        [] => format!("key {key}"),
        [0] => format!("keys from {key} on"),
        end if prefix_end(&permission.key).as_deref() == Some(end) => format!("prefix {key}"),
        end => format!("range [{key}, {})", bytes_cell(end)),
    }
}

fn permission_text(permission: &proto::Permission) -> String {
    format!("{} {}", kind_text(permission.kind), keys_text(permission))
}

impl AuthReport {
    pub fn json(&self) -> Value {
        match self {
            AuthReport::Changed { done, revision } => {
                json!({ "done": done, "revision": revision })
            }
            AuthReport::Status(status) => {
                json!({ "enabled": status.enabled, "revision": status.revision })
            }
            AuthReport::Users(users) => Value::Array(
                users
                    .iter()
                    .map(|user| {
                        json!({
                            "name": user.name,
                            "roles": user.roles,
                            "has_password": user.has_password,
                        })
                    })
                    .collect(),
            ),
            AuthReport::Roles(roles) => Value::Array(
                roles
                    .iter()
                    .map(|role| {
                        json!({
                            "name": role.name,
                            "permissions": role.permissions.iter().map(|p| json!({
                                "kind": kind_text(p.kind),
                                "key": bytes_cell(&p.key),
                                "range_end": bytes_cell(&p.range_end),
                                "keys": keys_text(p),
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect(),
            ),
        }
    }

    pub fn table(&self) -> String {
        match self {
            AuthReport::Changed { done, revision } => {
                format!("{done} (auth revision {revision})\n")
            }
            AuthReport::Status(status) => crate::table::aligned(&[
                vec!["enabled".into(), status.enabled.to_string()],
                vec!["revision".into(), status.revision.to_string()],
            ]),
            AuthReport::Users(users) => {
                let rows: Vec<Vec<String>> = users
                    .iter()
                    .map(|user| {
                        vec![
                            user.name.clone(),
                            user.roles.join(","),
                            if user.has_password {
                                "yes"
                            } else {
                                "no (certificate)"
                            }
                            .into(),
                        ]
                    })
                    .collect();
                table(&["USER", "ROLES", "PASSWORD"], &rows)
            }
            AuthReport::Roles(roles) => {
                let rows: Vec<Vec<String>> = roles
                    .iter()
                    .flat_map(|role| {
                        let mut rows: Vec<Vec<String>> = role
                            .permissions
                            .iter()
                            .map(|p| {
                                vec![role.name.clone(), kind_text(p.kind).into(), keys_text(p)]
                            })
                            .collect();
                        if rows.is_empty() {
                            rows.push(vec![role.name.clone(), "-".into(), "-".into()]);
                        }
                        rows
                    })
                    .collect();
                table(&["ROLE", "PERMISSION", "KEYS"], &rows)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(key: &str, end: Option<&str>, prefix: bool, from_key: bool) -> PermissionKeys {
        PermissionKeys {
            key: key.into(),
            end: end.map(Into::into),
            prefix,
            from_key,
        }
    }

    #[test]
    fn permissions_take_etcd_range_ends() {
        let prefix = permission(
            Some(PermissionKindArg::Read),
            &keys("a/", None, true, false),
        );
        assert_eq!(prefix.range_end, b"a0");
        assert_eq!(keys_text(&prefix), "prefix a/");
        let single = permission(
            Some(PermissionKindArg::Write),
            &keys("k", None, false, false),
        );
        assert!(single.range_end.is_empty());
        assert_eq!(permission_text(&single), "write key k");
        let from = permission(None, &keys("k", None, false, true));
        assert_eq!(from.range_end, [0]);
        let range = permission(None, &keys("a", Some("c"), false, false));
        assert_eq!(keys_text(&range), "range [a, c)");
        let everything = permission(None, &keys("", None, true, false));
        assert_eq!(everything.range_end, [0]);
    }

    #[test]
    fn user_names_and_passwords_split_at_the_first_colon() {
        let credentials = credentials("alice:pa:ss").unwrap();
        assert_eq!(credentials.user, "alice");
        assert_eq!(credentials.password, "pa:ss");
        assert!(super::credentials(":pw").is_err());
    }
}
