//! Resolving `user` and `group_add` against the image's `/etc/passwd` and `/etc/group`, as
//! Docker does: a name must exist; a number may be absent (then gid 0 and home `/`); the
//! supplementary groups are the groups that list the user as a member, plus `group_add`.
//! The files are read from the image's layers (topmost layer that has the file wins).

use std::path::{Path, PathBuf};

use crate::engine::runtime::inroot::Root;

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids.
    pub groups: Vec<u32>,
    /// Home directory (for `HOME`).
    pub home: String,
}

/// The largest `/etc/passwd` or `/etc/group` read from an image (larger files are ignored).
const FILE_LIMIT: u64 = 4 << 20;

/// Reads a file of the image: the topmost layer (of `layers`, lowest first) that has it. The
/// path is resolved inside each layer (a symlink in the image never leads out of it).
#[must_use]
pub fn read_image_file(layers: &[PathBuf], rel: &str) -> Option<String> {
    layers.iter().rev().find_map(|l| {
        let root = Root::open(l).ok()?;
        read_in(&root, rel)
    })
}

fn read_in(root: &Root, rel: &str) -> Option<String> {
    let bytes = root.read(Path::new(rel), FILE_LIMIT).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

struct Passwd {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct Group {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn passwd(text: &str) -> Vec<Passwd> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 6 {
                return None;
            }
            Some(Passwd {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

fn groups(text: &str) -> Vec<Group> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some(Group {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Resolves `spec` (`""`, `name`, `uid`, `name:group`, `uid:gid`) and `group_add` with the
/// given passwd and group file contents.
pub fn resolve(
    spec: &str,
    group_add: &[String],
    passwd_text: &str,
    group_text: &str,
) -> Result<ExecUser, String> {
    let users = passwd(passwd_text);
    let grps = groups(group_text);
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let (uid, mut gid, name, home) = if let Ok(n) = u.parse::<u32>() {
        match users.iter().find(|p| p.uid == n) {
            Some(p) => (p.uid, p.gid, Some(p.name.clone()), p.home.clone()),
            None => (n, 0, None, "/".to_string()),
        }
    } else {
        let p = users.iter().find(|p| p.name == u).ok_or_else(|| {
            format!("unable to find user {u}: no matching entries in passwd file")
        })?;
        (p.uid, p.gid, Some(p.name.clone()), p.home.clone())
    };
    if let Some(g) = g {
        gid = if let Ok(n) = g.parse::<u32>() {
            n
        } else {
            grps.iter()
                .find(|x| x.name == g)
                .map(|x| x.gid)
                .ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?
        };
    }
    let mut extra: Vec<u32> = Vec::new();
    if let Some(name) = &name {
        for gr in &grps {
            if gr.members.iter().any(|m| m == name) && !extra.contains(&gr.gid) {
                extra.push(gr.gid);
            }
        }
    }
    for ga in group_add {
        let id = if let Ok(n) = ga.parse::<u32>() {
            n
        } else {
            grps.iter()
                .find(|x| &x.name == ga)
                .map(|x| x.gid)
                .ok_or_else(|| format!("unable to find group {ga}"))?
        };
        if !extra.contains(&id) {
            extra.push(id);
        }
    }
    Ok(ExecUser {
        uid,
        gid,
        groups: extra,
        home,
    })
}

/// Resolves a user against the files of an image's layers.
pub fn resolve_in_layers(
    spec: &str,
    group_add: &[String],
    layers: &[PathBuf],
) -> Result<ExecUser, String> {
    let p = read_image_file(layers, "etc/passwd").unwrap_or_default();
    let g = read_image_file(layers, "etc/group").unwrap_or_default();
    resolve(spec, group_add, &p, &g)
}

/// Resolves a user against the files under a root directory (a running container's), each
/// resolved inside it.
pub fn resolve_in_root(spec: &str, group_add: &[String], root: &Root) -> Result<ExecUser, String> {
    let p = read_in(root, "etc/passwd").unwrap_or_default();
    let g = read_in(root, "etc/group").unwrap_or_default();
    resolve(spec, group_add, &p, &g)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n";
    const G: &str = "root:x:0:\napp:x:1000:\nextra:x:2000:app\nwheel:x:10:root\n";

    #[test]
    fn container_user_resolution() {
        let r = resolve("", &[], P, G).unwrap();
        assert_eq!((r.uid, r.gid, r.groups.clone()), (0, 0, vec![10]));
        let a = resolve("app", &[], P, G).unwrap();
        assert_eq!(
            (a.uid, a.gid, a.groups, a.home),
            (1000, 1000, vec![2000], "/home/app".into())
        );
        let n = resolve("1234:55", &["extra".into(), "7".into()], P, G).unwrap();
        assert_eq!((n.uid, n.gid, n.groups), (1234, 55, vec![2000, 7]));
        let ng = resolve("app:extra", &[], P, G).unwrap();
        assert_eq!(ng.gid, 2000);
        assert!(resolve("ghost", &[], P, G).is_err());
        assert!(resolve("app:ghosts", &[], P, G).is_err());
    }
}
