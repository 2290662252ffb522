//! Containers as processes: the spec's command, args, env and workingDir, run inside
//! the sandbox's namespaces and the container's cgroup, output to a log file.
//!
//! `image` is recorded, not pulled: a container without `command` cannot run, and says
//! so in its status.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::error::{Error, Result, io_err};
use crate::procfs::ProcRef;
use crate::sys;

/// The PATH a container gets when its env does not set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A container ready to start: argv, env, working dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// Program and arguments (command then args, with $(VAR) expanded).
    pub argv: Vec<String>,
    /// The full environment.
    pub env: BTreeMap<String, String>,
    /// workingDir, if set.
    pub working_dir: Option<PathBuf>,
    /// (uid, gid) from securityContext runAsUser/runAsGroup (container, else pod);
    /// None runs as root.
    pub user: Option<(u32, u32)>,
}

/// Values the downward API can put into env (`fieldRef`).
#[derive(Debug, Clone, Default)]
pub struct PodFields {
    /// status.podIP.
    pub pod_ip: Option<String>,
    /// status.hostIP.
    pub host_ip: Option<String>,
}

/// Why a container cannot be started with this spec (the status's waiting reason and
/// message), or its process spec.
pub fn process_spec(
    pod: &Pod,
    c: &Container,
    hostname: &str,
    fields: &PodFields,
) -> std::result::Result<ProcessSpec, (String, String)> {
    let config_err = |m: String| ("CreateContainerConfigError".to_owned(), m);
    let command = c.command.clone().unwrap_or_default();
    if command.is_empty() {
        return Err(config_err(format!(
            "container {:?} has no command: skein runs containers as host processes and does not pull or unpack images (image {:?} is only recorded)",
            c.name,
            c.image.clone().unwrap_or_default()
        )));
    }
    let mut env = BTreeMap::new();
    env.insert("PATH".to_owned(), DEFAULT_PATH.to_owned());
    env.insert("HOSTNAME".to_owned(), hostname.to_owned());
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (_, Some(from)) => {
                let Some(f) = &from.field_ref else {
                    return Err(config_err(format!(
                        "env {:?}: only value and valueFrom.fieldRef are supported (no configMap, secret or resource refs)",
                        e.name
                    )));
                };
                field_value(pod, &f.field_path, fields).ok_or_else(|| {
                    config_err(format!(
                        "env {:?}: unsupported fieldRef {:?}",
                        e.name, f.field_path
                    ))
                })?
            }
            (v, None) => expand(v.as_deref().unwrap_or(""), &env),
        };
        env.insert(e.name.clone(), value);
    }
    let argv = command
        .iter()
        .chain(c.args.iter().flatten())
        .map(|a| expand(a, &env))
        .collect();
    let sc = c.security_context.as_ref();
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let uid = sc
        .and_then(|s| s.run_as_user)
        .or(psc.and_then(|s| s.run_as_user));
    let gid = sc
        .and_then(|s| s.run_as_group)
        .or(psc.and_then(|s| s.run_as_group));
    let id = |v: i64, what: &str| {
        u32::try_from(v).map_err(|_| config_err(format!("{what} {v} is not a valid id")))
    };
    let user = match (uid, gid) {
        (None, None) => None,
        (u, g) => Some((
            id(u.unwrap_or(0), "runAsUser")?,
            id(g.unwrap_or(0), "runAsGroup")?,
        )),
    };
    Ok(ProcessSpec {
        user,
        argv,
        env,
        working_dir: c
            .working_dir
            .as_ref()
            .filter(|w| !w.is_empty())
            .map(PathBuf::from),
    })
}

fn field_value(pod: &Pod, path: &str, fields: &PodFields) -> Option<String> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    Some(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" => fields.pod_ip.clone().unwrap_or_default(),
        "status.hostIP" => fields.host_ip.clone().unwrap_or_default(),
        _ => {
            // metadata.labels['k'] / metadata.annotations['k']
            let (map, rest) = if let Some(r) = path.strip_prefix("metadata.labels[") {
                (m.labels.as_ref(), r)
            } else if let Some(r) = path.strip_prefix("metadata.annotations[") {
                (m.annotations.as_ref(), r)
            } else {
                return None;
            };
            let key = rest
                .strip_suffix(']')?
                .trim_matches(|c| c == '\'' || c == '"');
            map.and_then(|m| m.get(key).cloned()).unwrap_or_default()
        }
    })
}

/// Kubernetes variable expansion: `$(VAR)` becomes VAR's value when defined, `$$` is a
/// literal `$`, and an undefined reference stays as written.
pub fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('(')
            && let Some(end) = r.find(')')
        {
            let name = &r[..end];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Where the process joins: the sandbox's namespaces and the container's cgroup.
#[derive(Debug)]
pub struct Placement<'a> {
    /// `namespace/name` for messages.
    pub pod: &'a str,
    /// The sandbox's pause process.
    pub pause: &'a ProcRef,
    /// The container's cgroup.
    pub cgroup: Option<&'a Path>,
}

/// Starts a container process, stdout and stderr appended to `log`. Returns the process
/// (it leads its own session and process group) and the tokio handle that reaps it.
pub fn spawn(
    spec: &ProcessSpec,
    name: &str,
    at: &Placement<'_>,
    log: &Path,
) -> Result<(ProcRef, tokio::process::Child)> {
    let fail = |reason: String| Error::Container {
        pod: at.pod.to_owned(),
        container: name.to_owned(),
        reason,
    };
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(io_err("create log dir", dir))?;
    }
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io_err("open log", log))?;
    let err = out.try_clone().map_err(io_err("open log", log))?;
    let namespaces = crate::sandbox::open_namespaces(at.pod, at.pause)?;
    let cgroup_procs = crate::cgroup::prepare(at.cgroup)?;
    let mut cmd = std::process::Command::new(&spec.argv[0]);
    cmd.args(&spec.argv[1..])
        .env_clear()
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let cwd = spec
        .working_dir
        .as_deref()
        .map(sys::path_cstring)
        .transpose()
        .map_err(fail)?;
    sys::join_hooks(&mut cmd, namespaces, cgroup_procs, true, spec.user, cwd);
    let child = tokio::process::Command::from(cmd)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| fail(format!("start {:?}: {e}", spec.argv[0])))?;
    let pid = child.id().ok_or_else(|| fail("exited at once".into()))? as i32;
    // If it already exited, the start time cannot be read; the exit is seen by waiting.
    let proc = ProcRef::of(pid).unwrap_or(ProcRef { pid, start_time: 0 });
    Ok((proc, child))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec};

    fn pod() -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("web".into());
        p.metadata.namespace = Some("prod".into());
        p.metadata.labels = Some([("app".to_owned(), "w".to_owned())].into());
        p.spec = Some(PodSpec {
            node_name: Some("n1".into()),
            ..Default::default()
        });
        p
    }

    fn field(name: &str, path: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: path.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn container_without_command_is_rejected_with_the_reason() {
        let c = Container {
            name: "nginx".into(),
            image: Some("nginx:1.27".into()),
            ..Default::default()
        };
        let (reason, msg) = process_spec(&pod(), &c, "web", &PodFields::default()).unwrap_err();
        assert_eq!(reason, "CreateContainerConfigError");
        assert!(
            msg.contains("has no command") && msg.contains("nginx:1.27"),
            "{msg}"
        );
    }

    #[test]
    fn env_fieldrefs_and_expansion() {
        let c = Container {
            name: "c".into(),
            command: Some(vec!["sh".into(), "-c".into()]),
            args: Some(vec!["echo $(GREETING) $(POD_IP) $$(X) $(NOPE)".into()]),
            env: Some(vec![
                EnvVar {
                    name: "WHO".into(),
                    value: Some("world".into()),
                    ..Default::default()
                },
                EnvVar {
                    name: "GREETING".into(),
                    value: Some("hello $(WHO)".into()),
                    ..Default::default()
                },
                field("POD_IP", "status.podIP"),
                field("NODE", "spec.nodeName"),
                field("APP", "metadata.labels['app']"),
                field("NS", "metadata.namespace"),
            ]),
            working_dir: Some("/tmp".into()),
            ..Default::default()
        };
        let f = PodFields {
            pod_ip: Some("10.244.1.5".into()),
            host_ip: None,
        };
        let s = process_spec(&pod(), &c, "web", &f).unwrap();
        assert_eq!(
            s.argv,
            ["sh", "-c", "echo hello world 10.244.1.5 $(X) $(NOPE)"]
        );
        assert_eq!(s.env["NODE"], "n1");
        assert_eq!(s.env["APP"], "w");
        assert_eq!(s.env["NS"], "prod");
        assert_eq!(s.env["HOSTNAME"], "web");
        assert_eq!(s.env["PATH"], DEFAULT_PATH);
        assert_eq!(s.working_dir, Some(PathBuf::from("/tmp")));
    }

    #[test]
    fn run_as_user_container_wins_over_pod() {
        use k8s_openapi::api::core::v1::{PodSecurityContext, SecurityContext};
        let mut p = pod();
        p.spec.as_mut().unwrap().security_context = Some(PodSecurityContext {
            run_as_user: Some(1000),
            run_as_group: Some(1000),
            ..Default::default()
        });
        let mut c = Container {
            name: "c".into(),
            command: Some(vec!["true".into()]),
            ..Default::default()
        };
        let f = PodFields::default();
        assert_eq!(
            process_spec(&p, &c, "h", &f).unwrap().user,
            Some((1000, 1000))
        );
        c.security_context = Some(SecurityContext {
            run_as_user: Some(5),
            ..Default::default()
        });
        assert_eq!(process_spec(&p, &c, "h", &f).unwrap().user, Some((5, 1000)));
        c.security_context = Some(SecurityContext {
            run_as_user: Some(-1),
            ..Default::default()
        });
        assert!(
            process_spec(&p, &c, "h", &f)
                .unwrap_err()
                .1
                .contains("runAsUser -1")
        );
        assert_eq!(
            process_spec(
                &pod(),
                &Container {
                    security_context: None,
                    ..c
                },
                "h",
                &f
            )
            .unwrap()
            .user,
            None
        );
    }

    #[test]
    fn unsupported_env_sources_are_named() {
        let c = Container {
            name: "c".into(),
            command: Some(vec!["true".into()]),
            env: Some(vec![
                field("X", "status.podIPs"),
                EnvVar {
                    name: "S".into(),
                    value_from: Some(EnvVarSource::default()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let (_, msg) = process_spec(&pod(), &c, "web", &PodFields::default()).unwrap_err();
        assert!(msg.contains("status.podIPs"), "{msg}");
    }
}
