//! Synthetic compose projects of any size, for the loader benchmark and load tests.
//!
//! [`synthetic_compose`] writes a project of `n` services that uses most of the format: ports
//! in short and long form, named volumes and binds, environment lists and maps with
//! interpolation, `depends_on` chains (a DAG: each service depends on up to two earlier
//! ones), healthchecks, `extends`, anchors with merge keys, profiles, networks and labels.

use std::fmt::Write as _;

/// The text of a compose file with `n` services (`svc0` … `svc{n-1}`).
#[must_use]
pub fn synthetic_compose(n: usize) -> String {
    let mut s = String::with_capacity(n * 700);
    s.push_str(
        "name: synthetic\n\
         x-common: &common\n  restart: unless-stopped\n  labels:\n    tier: bench\n  \
         logging:\n    driver: json-file\n    options:\n      max-size: 10m\n\n\
         services:\n  base:\n    image: busybox:${TAG:-latest}\n    environment:\n      \
         BASE: \"1\"\n\n",
    );
    for i in 0..n {
        let _ = write!(
            s,
            "  svc{i}:\n    <<: *common\n    image: \"registry.local/app{i}:${{TAG:-latest}}\"\n    \
             command: [\"sh\", \"-c\", \"echo svc{i} && sleep 3600\"]\n    \
             environment:\n      - INDEX={i}\n      - HOME_DIR=${{HOME:-/root}}\n      - MODE\n    \
             ports:\n      - \"127.0.0.1:{port}:80\"\n      - target: 443\n        published: \"{port2}\"\n        protocol: tcp\n    \
             volumes:\n      - data{v}:/var/lib/data\n      - ./conf/svc{i}:/etc/app:ro\n    \
             healthcheck:\n      test: wget -q -O- http://localhost/ || exit 1\n      interval: 30s\n      timeout: 5s\n      retries: 3\n    \
             networks: [front, back]\n    \
             ulimits:\n      nofile: {{soft: 1024, hard: 4096}}\n    \
             deploy:\n      resources:\n        limits: {{cpus: \"0.5\", memory: 64m}}\n",
            port = 20000 + i,
            port2 = 40000 + i,
            v = i % 16,
        );
        let deps: Vec<usize> = [i.checked_sub(1), i.checked_sub(7)]
            .into_iter()
            .flatten()
            .filter(|d| d % 50 != 49)
            .collect();
        if !deps.is_empty() {
            s.push_str("    depends_on:\n");
            for d in deps {
                let _ = writeln!(s, "      svc{d}:\n        condition: service_started");
            }
        }
        if i % 10 == 9 {
            s.push_str("    extends: base\n");
        }
        if i % 50 == 49 {
            s.push_str("    profiles: [extra]\n");
        }
        s.push('\n');
    }
    s.push_str("networks:\n  front: {}\n  back:\n    internal: true\n\nvolumes:\n");
    for v in 0..16.min(n.max(1)) {
        let _ = writeln!(s, "  data{v}: {{}}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synth_project_loads() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("compose.yaml"), synthetic_compose(60)).unwrap();
        let opts = crate::project::LoadOptions {
            cwd: Some(tmp.path().to_path_buf()),
            environment: Some(std::collections::BTreeMap::new()),
            ..Default::default()
        };
        let p = crate::project::load(&opts).unwrap();
        // svc49 has a profile that is not active; `base` has none.
        assert_eq!(p.services.len(), 60);
        assert_eq!(p.disabled_services.len(), 1);
        let g = crate::project::Graph::new(&p).unwrap();
        assert_eq!(g.start_order()[0], "base");
    }
}
