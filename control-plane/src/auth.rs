//! Authentication, in kube-apiserver's order: a verified client certificate
//! (`--client-ca-file`, see [`crate::client_cert`]), static bearer tokens
//! (`--token-auth-file`, kube's CSV format `token,user,uid,"group1,group2"`), then
//! anonymous requests (`--anonymous-auth`).
//! Every authenticated user may do everything (no authorization layer yet).

use std::collections::HashMap;
use std::path::Path;

/// A user a token maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// User name.
    pub name: String,
    /// User id.
    pub uid: String,
    /// Groups.
    pub groups: Vec<String>,
}

/// The token table.
#[derive(Debug, Default)]
pub struct Tokens(HashMap<String, User>);

/// Why a token file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// Reading failed.
    #[error("read token file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("token file {path} line {line}: {reason}")]
    Line {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

fn split_csv(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().map(|s| s.trim().to_owned()).collect()
}

impl Tokens {
    /// Parses the CSV text of a token file.
    pub fn parse(text: &str, path: &str) -> Result<Tokens, TokenFileError> {
        let mut map = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f = split_csv(line);
            let bad = |reason: &str| TokenFileError::Line {
                path: path.to_owned(),
                line: i + 1,
                reason: reason.to_owned(),
            };
            if f.len() < 3 || f[0].is_empty() || f[1].is_empty() {
                return Err(bad("expected token,user,uid[,\"groups\"]"));
            }
            let groups = f
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            if map
                .insert(
                    f[0].clone(),
                    User {
                        name: f[1].clone(),
                        uid: f[2].clone(),
                        groups,
                    },
                )
                .is_some()
            {
                return Err(bad("duplicate token"));
            }
        }
        Ok(Tokens(map))
    }

    /// Reads a token file.
    pub fn load(path: &Path) -> Result<Tokens, TokenFileError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: p.clone(),
            source,
        })?;
        Tokens::parse(&text, &p)
    }

    /// The user of a bearer token.
    pub fn user(&self, token: &str) -> Option<&User> {
        self.0.get(token)
    }

    /// Whether any token is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The outcome of authenticating a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A known user.
    User(String),
    /// No credentials, anonymous allowed.
    Anonymous,
    /// Rejected (401).
    Denied,
}

/// Authenticates an `Authorization` header value.
/// `cert_user`: the CommonName of the connection's verified client certificate.
pub fn authenticate(
    tokens: &Tokens,
    cert_user: Option<&str>,
    header: Option<&str>,
    anonymous: bool,
) -> Verdict {
    if let Some(u) = cert_user {
        return Verdict::User(u.to_owned());
    }
    match header {
        Some(h) => match h.strip_prefix("Bearer ").map(str::trim) {
            Some(t) => match tokens.user(t) {
                Some(u) => Verdict::User(u.name.clone()),
                None => Verdict::Denied,
            },
            None => Verdict::Denied,
        },
        None if anonymous => Verdict::Anonymous,
        None => Verdict::Denied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_parses_kube_csv() {
        let t = Tokens::parse(
            "# admins\nsecret1,admin,1,\"system:masters,dev\"\nsecret2,bob,2\n",
            "f",
        )
        .unwrap();
        let u = t.user("secret1").unwrap();
        assert_eq!(u.name, "admin");
        assert_eq!(u.groups, vec!["system:masters", "dev"]);
        assert_eq!(t.user("secret2").unwrap().groups.len(), 0);
        assert!(
            Tokens::parse("onlytoken\n", "f")
                .unwrap_err()
                .to_string()
                .contains("line 1")
        );
        assert!(Tokens::parse("a,u,1\na,v,2\n", "f").is_err());
    }

    #[test]
    fn verdicts() {
        let t = Tokens::parse("tok,alice,1\n", "f").unwrap();
        assert_eq!(
            authenticate(&t, None, Some("Bearer tok"), false),
            Verdict::User("alice".into())
        );
        assert_eq!(
            authenticate(&t, None, Some("Bearer nope"), true),
            Verdict::Denied
        );
        assert_eq!(
            authenticate(&t, None, Some("Basic x"), true),
            Verdict::Denied
        );
        assert_eq!(authenticate(&t, None, None, true), Verdict::Anonymous);
        assert_eq!(authenticate(&t, None, None, false), Verdict::Denied);
        // A verified client certificate authenticates first, as in kube-apiserver.
        for header in [None, Some("Bearer nope")] {
            assert_eq!(
                authenticate(&t, Some("admin"), header, false),
                Verdict::User("admin".into())
            );
        }
    }
}
