//! Throwaway certificate authorities for the TLS tests: a CA and a server
//! certificate for 127.0.0.1 and localhost signed by it, made with the
//! machine's `openssl` command (P-256 keys, valid for two days).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA and one server certificate it signed, as PEM files in `dir`.
pub struct TestCa {
    pub dir: PathBuf,
    /// The CA's certificate: what a client trusts.
    pub ca: PathBuf,
    /// The server's certificate and its key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (Debian's openssl package)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCa {
    /// A new CA named `name` in `dir` (created), and a server certificate.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        std::fs::create_dir_all(dir).expect("the certificates' directory");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let ca_subject = format!("/CN={name}");
        let mut args = vec!["req", "-x509", "-days", "2", "-subj", &ca_subject];
        args.extend(ec);
        args.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
        args.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
        args.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        openssl(dir, &args);
        let mut args = vec!["req", "-subj", "/CN=127.0.0.1"];
        args.extend(ec);
        args.extend(["-keyout", "server.key", "-out", "server.csr"]);
        openssl(dir, &args);
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("the extensions file");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
        );
        TestCa {
            dir: dir.to_path_buf(),
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }

    /// The CA's certificate as PEM bytes.
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(&self.ca).expect("the CA certificate")
    }
}
