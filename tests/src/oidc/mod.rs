//! The identity provider the tests sign in with: the project's local OpenID
//! Connect provider (`scripts/oidc/provider.mjs`, on npm's `oidc-provider`),
//! a real one, never a mock. One instance serves a whole test binary
//! ([`Provider::shared`]); a test that rotates keys or stops the provider
//! starts its own ([`Provider::start`]). Each instance has its own keys in a
//! directory of its own; it exits when the test process does (it watches its
//! stdin, which the harness holds open).

mod diagnosis;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;

use diagnosis::{exit_status, process_state};

/// The audience the provider's access tokens name and the service expects.
pub const AUDIENCE: &str = "orders-api";

/// The development grant's client (scripts/oidc/provider.mjs).
const DEV_CLIENT: (&str, &str) = ("orders-dev", "orders-dev-secret");
/// The pages' client (scripts/oidc/provider.mjs): authorization code + PKCE.
pub const WEB_CLIENT: (&str, &str) = ("orders-web", "orders-web-secret");
const DEV_GRANT: &str = "urn:orders:params:oauth:grant-type:dev-token";
/// Node loads the library in half a second alone; with the machine's two
/// cores busy building and testing, a few seconds.
const START_WITHIN: Duration = Duration::from_secs(60);

/// A running provider.
pub struct Provider {
    pub issuer: String,
    /// The CA that signed its https certificate (`None`: plain http).
    pub ca: Option<Vec<u8>>,
    /// The private key set it signs with (a test forges tokens with it).
    pub keys_file: PathBuf,
    child: Mutex<Option<Child>>,
    /// Held open: the provider exits when it closes.
    _stdin: Option<ChildStdin>,
    lines: Mutex<Receiver<String>>,
    /// Its keys and log; removed with it.
    _dir: PathBuf,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// Installs the provider's npm packages if they are missing (once).
fn install() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let status = Command::new(repo().join("scripts/oidc.sh"))
            .arg("install")
            .stdout(Stdio::null())
            .status()
            .expect("run scripts/oidc.sh install");
        assert!(
            status.success(),
            "scripts/oidc.sh install failed: the tests need the local OpenID Connect provider"
        );
    });
}

impl Provider {
    /// The instance this test binary shares.
    pub fn shared() -> Arc<Provider> {
        static SHARED: OnceLock<Arc<Provider>> = OnceLock::new();
        SHARED.get_or_init(|| Arc::new(Provider::start())).clone()
    }

    /// A provider of the test's own, with fresh keys, on a free port.
    pub fn start() -> Provider {
        Provider::start_with(None)
    }

    /// Like [`Provider::start`], serving https with `tls`'s server
    /// certificate (for 127.0.0.1): its issuer is `https://127.0.0.1:PORT`.
    pub fn start_tls(tls: &crate::certs::TestCa) -> Provider {
        Provider::start_with(Some(tls))
    }

    fn start_with(tls: Option<&crate::certs::TestCa>) -> Provider {
        install();
        let dir = std::env::temp_dir().join(format!("orders-oidc-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("the provider's directory");
        let keys_file = dir.join("keys.json");
        let log = std::fs::File::create(dir.join("provider.log")).expect("the provider's log");
        let mut child = Command::new("node")
            .arg(repo().join("scripts/oidc/provider.mjs"))
            .env("OIDC_PORT", "0")
            .env("OIDC_KEYS", &keys_file)
            .env("OIDC_AUDIENCE", AUDIENCE)
            .env("OIDC_DEPS", repo().join(".local/oidc"))
            .env("OIDC_EXIT_WITH_STDIN", "1")
            // The shared provider lives in a static, never dropped: it
            // removes its own directory when its stdin closes (the test
            // process ended, however it ended).
            .env("OIDC_REMOVE_ON_EXIT", &dir)
            .envs(tls.into_iter().flat_map(|tls| {
                [
                    ("OIDC_TLS_CERT", tls.cert.clone()),
                    ("OIDC_TLS_KEY", tls.key.clone()),
                ]
            }))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start node scripts/oidc/provider.mjs");
        let stdout = child.stdout.take().expect("the provider's stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let started = std::time::Instant::now();
        let ready = match rx.recv_timeout(START_WITHIN) {
            Ok(line) => line,
            Err(waited) => {
                let why = match waited {
                    mpsc::RecvTimeoutError::Disconnected => format!(
                        "it exited ({}) after {:?}",
                        exit_status(&mut child),
                        started.elapsed()
                    ),
                    mpsc::RecvTimeoutError::Timeout => {
                        let state = process_state(child.id());
                        let _ = child.kill();
                        let _ = child.wait();
                        format!("it did not answer within {START_WITHIN:?}; {state}")
                    }
                };
                let log = std::fs::read_to_string(dir.join("provider.log")).unwrap_or_default();
                let _ = std::fs::remove_dir_all(&dir);
                panic!("the OpenID Connect provider did not start: {why}\nits log:\n{log}");
            }
        };
        let issuer = ready
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("unexpected first line from the provider: {ready}"))
            .to_owned();
        Provider {
            issuer,
            ca: tls.map(crate::certs::TestCa::ca_pem),
            keys_file,
            child: Mutex::new(Some(child)),
            _stdin: stdin,
            lines: Mutex::new(rx),
            _dir: dir,
        }
    }

    /// An access token for `user` (with `role`: `staff` or `operator`),
    /// issued by the provider through its development grant.
    pub async fn token(&self, user: &str, role: Option<&str>) -> String {
        self.token_with(user, role, &[]).await
    }

    /// Like [`Provider::token`], with more of the grant's parameters
    /// (`ttl`, `alg`).
    pub async fn token_with(
        &self,
        user: &str,
        role: Option<&str>,
        extra: &[(&str, &str)],
    ) -> String {
        let mut form = vec![("grant_type", DEV_GRANT), ("username", user)];
        if let Some(role) = role {
            form.push(("role", role));
        }
        form.extend_from_slice(extra);
        let mut client = reqwest::Client::builder();
        if let Some(pem) = &self.ca {
            client =
                client.add_root_certificate(reqwest::Certificate::from_pem(pem).expect("the CA"));
        }
        let response = client
            .build()
            .expect("a client")
            .post(format!("{}/token", self.issuer))
            .basic_auth(DEV_CLIENT.0, Some(DEV_CLIENT.1))
            .form(&form)
            .send()
            .await
            .expect("the provider answers");
        let body: Value = response.json().await.expect("a JSON token response");
        body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("the provider issued no token: {body}"))
            .to_owned()
    }

    /// The provider's key set with its private parts.
    pub fn private_keys(&self) -> Value {
        let text = std::fs::read_to_string(&self.keys_file).expect("the provider's keys");
        serde_json::from_str(&text).expect("a JSON key set")
    }

    /// A token the provider would not issue, built from its own keys by
    /// `tests/scripts/forge_token.mjs` (see there for `spec`).
    pub fn forge(&self, spec: &Value) -> String {
        let out = Command::new("node")
            .arg(repo().join("tests/scripts/forge_token.mjs"))
            .arg(&self.keys_file)
            .arg(spec.to_string())
            .output()
            .expect("run forge_token.mjs");
        assert!(
            out.status.success(),
            "forge_token.mjs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Claims a token of this provider's for `user` would carry, valid now
    /// for ten minutes.
    pub fn claims(&self, user: &str, roles: &[&str]) -> Value {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        serde_json::json!({
            "iss": self.issuer, "aud": AUDIENCE, "sub": user, "roles": roles,
            "iat": now, "nbf": now, "exp": now + 600, "jti": uuid::Uuid::now_v7().to_string(),
        })
    }

    /// Puts a new RSA key first (it signs from now on; the old ones still
    /// verify) and makes the provider reload; returns the new key id.
    pub fn rotate(&self) -> String {
        let out = Command::new("node")
            .arg(repo().join("scripts/oidc/keys.mjs"))
            .arg("rotate")
            .arg(&self.keys_file)
            .output()
            .expect("run keys.mjs rotate");
        assert!(out.status.success(), "keys.mjs rotate failed");
        let kid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        self.reload();
        kid
    }

    /// Replaces the signing RSA key's material under the same key id (a
    /// provider that names its keys by slot, or a key set published without
    /// ids): the withdrawn key verifies nothing any more. Makes the provider
    /// reload; returns the key id kept.
    pub fn replace_signing_key(&self) -> String {
        let keys_module = repo().join("scripts/oidc/keys.mjs");
        let script = format!(
            "import {{ generateKey, readKeys, writeKeys }} from {module};
             const file = process.argv[1];
             const jwks = readKeys(file);
             const at = jwks.keys.findIndex((k) => k.kty === 'RSA');
             const kid = jwks.keys[at].kid;
             jwks.keys[at] = {{ ...generateKey('RSA'), kid }};
             writeKeys(file, jwks);
             console.log(kid);",
            module = serde_json::json!(format!("file://{}", keys_module.display()))
        );
        let out = Command::new("node")
            .args(["--input-type=module", "-e", &script])
            .arg(&self.keys_file)
            .output()
            .expect("run node");
        assert!(
            out.status.success(),
            "replacing the key failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let kid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        self.reload();
        kid
    }

    /// Makes the provider read its keys file again, and waits until it did.
    fn reload(&self) {
        self.signal("-HUP");
        let lines = self.lines.lock().expect("the provider's output");
        loop {
            let line = lines
                .recv_timeout(Duration::from_secs(10))
                .expect("the provider reloads its keys");
            if line.starts_with("reloaded") {
                return;
            }
        }
    }

    /// Stops the provider (its port stops answering).
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().expect("the provider").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) {
        let child = self.child.lock().expect("the provider");
        let pid = child.as_ref().expect("the provider runs").id();
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} {pid}");
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

/// The `kid` in a JWT's header.
pub fn header_kid(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("a JWT header")
        .kid
        .unwrap_or_default()
}
