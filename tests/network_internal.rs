//! `internal: true` networks (issue 14): their containers reach each other by name, and
//! nothing outside their subnet — the host's addresses included, through the gateway or
//! otherwise, published ports of other projects included.

use std::io::Write as _;
use std::net::TcpListener;

use crate::common::project::Project;
use crate::common::{busybox_image, require_root};

/// A host service on every address: accepts and says `hello-from-host`.
fn host_service() -> u16 {
    let l = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let _ = c.write_all(b"hello-from-host\n");
        }
    });
    port
}

fn free_port() -> u16 {
    TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn gateway(p: &Project, network: &str) -> String {
    let out = p.tug(&["network", "inspect", &format!("{}_{network}", p.name)]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["gateway"].as_str().unwrap().to_string()
}

/// Output of `sh -c SCRIPT` run in `service`, whatever its exit status.
fn sh_in(p: &Project, service: &str, script: &str) -> String {
    let out = p.output(&["exec", "-T", service, "sh", "-c", script]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn network_internal_reaches_its_peers_but_nothing_of_the_host() {
    if !require_root() {
        return;
    }
    let host_port = host_service();
    let published = free_port();
    let root = tempfile::tempdir().unwrap();
    busybox_image(root.path());
    // Another project publishes a port on every host address.
    let public = Project::in_root(
        root.path(),
        &format!(
            r#"
services:
  web:
    image: busybox:latest
    init: true
    command: ["sh", "-c", "mkdir -p /www && echo published > /www/index.html && exec httpd -f -p 80 -h /www"]
    ports: ["{published}:80"]
  client:
    image: busybox:latest
    init: true
    command: ["sleep", "1000"]
"#
        ),
    );
    let internal = Project::in_root(
        root.path(),
        r#"
services:
  peer:
    image: busybox:latest
    init: true
    command: ["sh", "-c", "mkdir -p /www && echo inside > /www/index.html && exec httpd -f -p 80 -h /www"]
    networks: [back]
  probe:
    image: busybox:latest
    init: true
    command: ["sleep", "1000"]
    networks: [back]
networks:
  back:
    internal: true
"#,
    );
    public.tug(&["up", "-d", "--wait"]);
    internal.tug(&["up", "-d", "--wait"]);
    let gw = gateway(&internal, "back");
    let public_gw = gateway(&public, "default");

    // Inside the network, names and peers work.
    let inside = sh_in(&internal, "probe", "timeout 5 wget -q -O - http://peer/");
    assert_eq!(inside.trim(), "inside");

    // The checks below can fail: from a network that is not internal, the same host
    // service and published port answer.
    let control = sh_in(
        &public,
        "client",
        &format!("timeout 5 nc {public_gw} {host_port}"),
    );
    assert_eq!(
        control.trim(),
        "hello-from-host",
        "the host service answers"
    );
    let control = sh_in(
        &public,
        "client",
        &format!("timeout 5 wget -q -O - http://{public_gw}:{published}/"),
    );
    assert_eq!(control.trim(), "published");

    // From the internal network: nothing of the host, by any of its addresses.
    for addr in [&gw, &public_gw] {
        let out = sh_in(
            &internal,
            "probe",
            &format!("timeout 3 nc {addr} {host_port}"),
        );
        assert!(
            !out.contains("hello-from-host"),
            "an internal network reached a host service at {addr}:{host_port}"
        );
        let out = sh_in(
            &internal,
            "probe",
            &format!("timeout 3 wget -q -O - http://{addr}:{published}/"),
        );
        assert!(
            !out.contains("published"),
            "an internal network reached a published port at {addr}:{published}"
        );
    }
    // Its DNS server on the gateway still answers.
    let dns = sh_in(&internal, "probe", &format!("nslookup peer {gw}"));
    assert!(dns.contains("Address"), "{dns}");
}
