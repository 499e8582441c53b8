//! Binding as root, serving as a user: uWSGI's `uid` and `gid`.
//!
//! `zerg-pool` started as root binds every listener (ports below 1024 too), creates the control
//! socket and its `logto` and `pidfile` files, then becomes the configured user before it starts
//! a zergling. Every process it starts inherits that user, so the zerglings, their workers and
//! their mules never hold root. A zergling started as root by someone else (a blue/green deploy
//! run by root) becomes the user itself, before it imports the app.
//!
//! What this module guarantees:
//! - A [`User`] or a [`Group`] exists only for an entry of the system's user or group database:
//!   names and numbers are resolved when the config is read, so one that does not exist is a
//!   config error naming the key and the line, never a failure after the sockets are bound.
//! - The order is the one that works, and uWSGI's: the supplementary groups (the user's, by
//!   `initgroups`; with `gid` alone, that one group), then the gid, then the uid. Once the uid
//!   is dropped the process can change none of them.
//! - Once the uid is dropped, the process checks that it cannot take root back (setuid(0)
//!   must fail), and stops if it can.
//! - glibc applies setgroups, setgid and setuid to every thread of the process (its "setxid"
//!   broadcast), so no thread started earlier (the pool's tokio runtime) keeps root.
//! - A process that is not root changes nothing: it may only already be what the config says.

use std::ffi::CString;
use std::fmt;

use nix::unistd::{Gid, Uid};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::config::Config;

/// `uid`: a user of this system, named by its name or its number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    /// Its primary group: the gid it gets when `gid` is not set.
    pub gid: u32,
}

/// `gid`: a group of this system, named by its name or its number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: u32,
}

/// uWSGI reads a value made of digits as a number, anything else as a name.
fn number(spec: &str) -> Option<u32> {
    let spec = spec.trim();
    (!spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()))
        .then(|| spec.parse().ok())
        .flatten()
}

impl User {
    /// The user named `spec` (a name, or a number as uWSGI takes it).
    pub fn resolve(spec: &str) -> Result<User, String> {
        let found = match number(spec) {
            Some(n) => nix::unistd::User::from_uid(Uid::from_raw(n)),
            None => nix::unistd::User::from_name(spec.trim()),
        };
        match found {
            Ok(Some(u)) => Ok(User {
                name: u.name,
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            }),
            Ok(None) => Err(match number(spec) {
                Some(n) => format!("no user has uid {n} on this system"),
                None => format!("no user `{}` on this system", spec.trim()),
            }),
            Err(e) => Err(format!("cannot look up user `{}`: {e}", spec.trim())),
        }
    }
}

impl Group {
    /// The group named `spec` (a name, or a number as uWSGI takes it).
    pub fn resolve(spec: &str) -> Result<Group, String> {
        let found = match number(spec) {
            Some(n) => nix::unistd::Group::from_gid(Gid::from_raw(n)),
            None => nix::unistd::Group::from_name(spec.trim()),
        };
        match found {
            Ok(Some(g)) => Ok(Group {
                name: g.name,
                gid: g.gid.as_raw(),
            }),
            Ok(None) => Err(match number(spec) {
                Some(n) => format!("no group has gid {n} on this system"),
                None => format!("no group `{}` on this system", spec.trim()),
            }),
            Err(e) => Err(format!("cannot look up group `{}`: {e}", spec.trim())),
        }
    }
}

impl fmt::Display for User {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "user {} (uid {})", self.name, self.uid)
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "group {} (gid {})", self.name, self.gid)
    }
}

/// Deserializes a name (`galaxy`) or a number (`998`, `"998"`) through `resolve`, so the error
/// for one that does not exist carries the key and the line.
fn deserialize_spec<'de, D, T>(
    d: D,
    what: &'static str,
    resolve: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct V<T> {
        what: &'static str,
        resolve: fn(&str) -> Result<T, String>,
    }
    impl<T> Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a {} name or number", self.what)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            (self.resolve)(v).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            self.visit_str(&v.to_string())
        }
    }
    d.deserialize_any(V { what, resolve })
}

impl<'de> Deserialize<'de> for User {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_spec(d, "user", User::resolve)
    }
}

impl<'de> Deserialize<'de> for Group {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_spec(d, "group", Group::resolve)
    }
}

/// Why a process could not become the configured user and group.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "`{key}` is {wanted}, but this process runs as {running}, not root: start it as root \
         (it binds its sockets, then becomes {wanted}) or as {wanted} itself"
    )]
    NotRoot {
        key: &'static str,
        wanted: String,
        running: String,
    },
    #[error("cannot become {wanted}: {call} failed: {source}")]
    Call {
        wanted: String,
        call: String,
        source: nix::Error,
    },
    #[error("after setuid({uid}) this process could take root back; refusing to go on")]
    StillRoot { uid: u32 },
}

/// Who a process runs as, from `uid` and `gid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub user: Option<User>,
    pub group: Option<Group>,
}

/// What [`RunAs::become_it`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The process was root and is now the user and group, with these supplementary groups.
    Dropped { groups: Vec<u32> },
    /// The process was not root, and is already what the config says.
    Already,
}

impl RunAs {
    /// The config's `uid` and `gid`; `None` when it sets neither.
    pub fn from_config(config: &Config) -> Option<RunAs> {
        (config.uid.is_some() || config.gid.is_some()).then(|| RunAs {
            user: config.uid.clone(),
            group: config.gid.clone(),
        })
    }

    /// The uid to become; `None` keeps the process's own (`gid` alone, as in uWSGI).
    pub fn uid(&self) -> Option<u32> {
        self.user.as_ref().map(|u| u.uid)
    }

    /// The gid to become: `gid`, else the user's own group (uWSGI would keep root's group).
    pub fn gid(&self) -> Option<u32> {
        self.group
            .as_ref()
            .map(|g| g.gid)
            .or(self.user.as_ref().map(|u| u.gid))
    }

    /// `user galaxy (uid 998), group galaxy (gid 998)`, as far as the config says.
    fn wanted(&self) -> String {
        let user = self.user.as_ref().map(ToString::to_string);
        let group = match (&self.group, &self.user) {
            (Some(g), _) => Some(g.to_string()),
            (None, Some(u)) => Some(format!("its group (gid {})", u.gid)),
            (None, None) => None,
        };
        user.into_iter().chain(group).collect::<Vec<_>>().join(", ")
    }

    /// Whether this process can become it: it is root, or it is it already. Checked before
    /// anything is bound, so a pool that could not drop never binds.
    pub fn check(&self) -> Result<(), PrivilegeError> {
        if nix::unistd::geteuid().is_root() {
            return Ok(());
        }
        let (uid, euid) = (nix::unistd::getuid(), nix::unistd::geteuid());
        if let Some(user) = &self.user {
            if uid.as_raw() != user.uid || euid.as_raw() != user.uid {
                return Err(PrivilegeError::NotRoot {
                    key: "uid",
                    wanted: user.to_string(),
                    running: format!("uid {euid}"),
                });
            }
        }
        // Only the `gid` the config names: a process that already runs as the user may have
        // been given another group on purpose (systemd's Group=).
        let (gid, egid) = (nix::unistd::getgid(), nix::unistd::getegid());
        if let Some(group) = &self.group {
            if gid.as_raw() != group.gid || egid.as_raw() != group.gid {
                return Err(PrivilegeError::NotRoot {
                    key: "gid",
                    wanted: group.to_string(),
                    running: format!("gid {egid}"),
                });
            }
        }
        Ok(())
    }

    /// Becomes the user and group: a root process drops to them for good, in the order
    /// groups, gid, uid; any other process only checks it already is them.
    pub fn become_it(&self) -> Result<Outcome, PrivilegeError> {
        self.check()?;
        if !nix::unistd::geteuid().is_root() {
            return Ok(Outcome::Already);
        }
        let call = |call: String| {
            let wanted = self.wanted();
            move |source| PrivilegeError::Call {
                wanted,
                call,
                source,
            }
        };
        if let Some(gid) = self.gid().map(Gid::from_raw) {
            match &self.user {
                Some(user) => {
                    let what = format!("initgroups({}, {gid})", user.name);
                    // A name from the user database holds no NUL.
                    CString::new(user.name.as_str())
                        .map_err(|_| nix::Error::EINVAL)
                        .and_then(|name| nix::unistd::initgroups(&name, gid))
                        .map_err(call(what))?;
                }
                None => {
                    nix::unistd::setgroups(&[gid]).map_err(call(format!("setgroups([{gid}])")))?
                }
            }
            nix::unistd::setgid(gid).map_err(call(format!("setgid({gid})")))?;
        }
        if let Some(uid) = self.uid() {
            nix::unistd::setuid(Uid::from_raw(uid)).map_err(call(format!("setuid({uid})")))?;
            // setuid as root sets the real, effective and saved uid at once; prove it.
            let ids = nix::unistd::getresuid().map_err(call("getresuid()".into()))?;
            let all = [ids.real, ids.effective, ids.saved];
            if uid != 0
                && (all.iter().any(|u| u.as_raw() != uid)
                    || nix::unistd::setuid(Uid::from_raw(0)).is_ok())
            {
                return Err(PrivilegeError::StillRoot { uid });
            }
        }
        let groups = nix::unistd::getgroups()
            .map_err(call("getgroups()".into()))?
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        Ok(Outcome::Dropped { groups })
    }
}

impl fmt::Display for RunAs {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.wanted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_resolve_to_the_same_entry() {
        let by_name = User::resolve("root").unwrap();
        assert_eq!((by_name.uid, by_name.gid), (0, 0));
        assert_eq!(User::resolve("0").unwrap(), by_name);
        assert_eq!(User::resolve(" 0 ").unwrap(), by_name);
        assert_eq!(Group::resolve("0").unwrap().gid, 0);
    }

    #[test]
    fn missing_entries_say_what_is_missing() {
        assert_eq!(
            User::resolve("zerg-no-such-user").unwrap_err(),
            "no user `zerg-no-such-user` on this system"
        );
        assert_eq!(
            Group::resolve("4294967290").unwrap_err(),
            "no group has gid 4294967290 on this system"
        );
        assert!(User::resolve("a\0b").is_err());
    }

    #[test]
    fn gid_defaults_to_the_users_own_group() {
        let user = User {
            name: "app".into(),
            uid: 998,
            gid: 997,
        };
        let run_as = RunAs {
            user: Some(user.clone()),
            group: None,
        };
        assert_eq!((run_as.uid(), run_as.gid()), (Some(998), Some(997)));
        assert_eq!(
            run_as.to_string(),
            "user app (uid 998), its group (gid 997)"
        );
        let group_only = RunAs {
            user: None,
            group: Some(Group {
                name: "web".into(),
                gid: 33,
            }),
        };
        assert_eq!((group_only.uid(), group_only.gid()), (None, Some(33)));
    }

    #[test]
    fn a_process_that_is_not_root_may_only_be_what_it_is() {
        if nix::unistd::geteuid().is_root() {
            return; // root may become anyone; tests/privileges.rs covers that.
        }
        let me = nix::unistd::getuid().as_raw();
        let same = RunAs {
            user: Some(User {
                name: "me".into(),
                uid: me,
                gid: 0,
            }),
            group: None,
        };
        assert_eq!(same.become_it().unwrap(), Outcome::Already);
        let other = RunAs {
            user: Some(User {
                name: "other".into(),
                uid: me + 1,
                gid: 0,
            }),
            group: None,
        };
        let err = other.become_it().unwrap_err().to_string();
        assert!(err.contains("`uid` is user other"), "{err}");
    }
}
