//! Certificates for HTTPS tests: a CA of its own and a leaf for 127.0.0.1, made with openssl.

use std::path::Path;
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A certificate for 127.0.0.1 signed by a CA of its own, in `dir`: (`name`.pem, `name`-key.pem,
/// `name`-ca.pem), the paths returned as (cert, key) with the CA beside them.
pub fn certificate(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca = format!("{name}-ca.pem");
    let ca_key = format!("{name}-ca-key.pem");
    let mut args = vec!["req", "-x509", "-days", "2", "-subj"];
    let subject = format!("/CN=sluice test CA {name}");
    args.push(&subject);
    args.extend(ec);
    args.extend(["-keyout", &ca_key, "-out", &ca]);
    openssl(dir, &args);
    let key = format!("{name}-key.pem");
    let csr = format!("{name}.csr");
    let leaf_subject = format!("/CN=127.0.0.1 {name}");
    let mut args = vec!["req", "-new", "-subj", &leaf_subject];
    args.extend(ec);
    args.extend(["-keyout", &key, "-out", &csr]);
    openssl(dir, &args);
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let cert = format!("{name}.pem");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    );
    (dir.join(cert), dir.join(key))
}

/// The CA that signed `cert` (see [`certificate`]).
pub fn ca_of(cert: &Path) -> std::path::PathBuf {
    cert.with_file_name(format!(
        "{}-ca.pem",
        cert.file_stem().unwrap().to_str().unwrap()
    ))
}
