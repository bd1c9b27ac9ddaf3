//! A real `docker-registry` with `auth: token` and a small RS256 token
//! service (the Docker token protocol, as Harbor serves it) on 127.0.0.1:
//! it checks basic credentials (`USER`/`PASSWORD` of the registry support),
//! grants the scopes asked for, records every request's scopes and every
//! token, and can hand out tokens that are already expired.
use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;

use super::registry::{PASSWORD, USER};

pub struct TokenRegistry {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    pub port: u16,
    /// The `scope` parameters of every token request, in order.
    pub scopes_seen: Arc<Mutex<Vec<Vec<String>>>>,
    /// Every token handed out.
    pub issued: Arc<Mutex<Vec<String>>>,
    /// How many of the next tokens are issued already expired.
    pub expire_next: Arc<AtomicU64>,
}

impl Drop for TokenRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    use std::process::Stdio;
    let mut child = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    if let Some(i) = stdin {
        child.stdin.take().unwrap().write_all(i).unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl {args:?}");
    out.stdout
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl TokenRegistry {
    pub fn start() -> TokenRegistry {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        openssl(
            &root,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "tok.key",
                "-out",
                "tok.crt",
                "-days",
                "2",
                "-subj",
                "/CN=token signer",
            ],
            None,
        );
        let der = openssl(&root, &["x509", "-in", "tok.crt", "-outform", "DER"], None);
        let x5c = base64::engine::general_purpose::STANDARD.encode(der);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let token_port = listener.local_addr().unwrap().port();
        let scopes_seen = Arc::new(Mutex::new(Vec::new()));
        let issued = Arc::new(Mutex::new(Vec::new()));
        let expire_next = Arc::new(AtomicU64::new(0));
        let (seen, iss, exp_n, troot) = (
            scopes_seen.clone(),
            issued.clone(),
            expire_next.clone(),
            root.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { break };
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match std::io::Read::read(&mut s, &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&req).to_string();
                let target = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                let url = url::Url::parse(&format!("http://x{target}")).unwrap();
                let scopes: Vec<String> = url
                    .query_pairs()
                    .filter(|(k, _)| k == "scope")
                    .map(|(_, v)| v.to_string())
                    .collect();
                seen.lock().unwrap().push(scopes.clone());
                let expected = format!(
                    "authorization: basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
                )
                .to_ascii_lowercase();
                let lower = text.to_ascii_lowercase();
                let has_auth = lower.contains("authorization:");
                let good = lower.contains(&expected);
                if has_auth && !good {
                    let _ = s.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                }
                let access: Vec<String> = if good {
                    scopes
                        .iter()
                        .filter_map(|sc| {
                            let mut p = sc.splitn(3, ':');
                            let (t, n, a) = (p.next()?, p.next()?, p.next()?);
                            let acts: Vec<String> =
                                a.split(',').map(|x| format!("\"{x}\"")).collect();
                            Some(format!(
                                "{{\"type\":\"{t}\",\"name\":\"{n}\",\"actions\":[{}]}}",
                                acts.join(",")
                            ))
                        })
                        .collect()
                } else {
                    vec![]
                };
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let expired = exp_n
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                // Far enough in the past for the registry's leeway.
                let (iat, exp) = if expired {
                    (now - 3600, now - 1800)
                } else {
                    (now - 10, now + 300)
                };
                let header = format!("{{\"alg\":\"RS256\",\"typ\":\"JWT\",\"x5c\":[\"{x5c}\"]}}");
                let claims = format!(
                    "{{\"iss\":\"test-issuer\",\"sub\":\"{}\",\"aud\":\"test-registry\",\"exp\":{exp},\"nbf\":{iat},\"iat\":{iat},\"jti\":\"{}\",\"access\":[{}]}}",
                    if good { USER } else { "" },
                    rand_jti(),
                    access.join(",")
                );
                let signing_input = format!(
                    "{}.{}",
                    b64url(header.as_bytes()),
                    b64url(claims.as_bytes())
                );
                let sig = openssl(
                    &troot,
                    &["dgst", "-sha256", "-sign", "tok.key"],
                    Some(signing_input.as_bytes()),
                );
                let jwt = format!("{signing_input}.{}", b64url(&sig));
                iss.lock().unwrap().push(jwt.clone());
                let body = format!("{{\"token\":\"{jwt}\",\"expires_in\":300}}");
                let _ = s.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        let port = super::registry::free_port();
        std::fs::create_dir_all(root.join("data")).unwrap();
        std::fs::write(
            root.join("config.yml"),
            format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: testsecret\nauth:\n  token:\n    realm: http://127.0.0.1:{token_port}/token\n    service: test-registry\n    issuer: test-issuer\n    rootcertbundle: {}\n",
                root.join("data").display(),
                root.join("tok.crt").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(root.join("config.yml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(root.join("registry.log")).unwrap())
            .spawn()
            .expect("docker-registry");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "registry did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        TokenRegistry {
            child,
            _dir: dir,
            port,
            scopes_seen,
            issued,
            expire_next,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn rand_jti() -> String {
    use std::sync::atomic::AtomicUsize;
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "jti-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}
