//! Networks and volumes with real containers of the runtime, wired the way the compose layer
//! wires them: namespace → endpoints → /etc/hosts and resolv.conf → mounts → create/start.
//! Checks run inside the containers (`tug container exec`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tug::engine::container::{
    ContainerConfig, ContainerStore, ImageInfo, Mount, MountKind, NetworkMode,
};
use tug::engine::image::ImageStore;
use tug::engine::network::{
    EndpointSpec, NetworkInfo, NetworkSpec, Networks, files, netlink, ports,
};
use tug::engine::volume::{Prepare, VolumeSpec, Volumes};

use crate::common::{self, require_root, unique};

struct Stack {
    root: tempfile::TempDir,
    nets: Networks,
    vols: Volumes,
    store: ContainerStore,
    image: ImageInfo,
    image_ref: String,
    containers: Vec<String>,
    networks: Vec<NetworkInfo>,
    finished: bool,
}

impl Stack {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let image_ref = common::busybox_image(root.path());
        let images = ImageStore::open(root.path()).unwrap();
        let img = images.resolve(&image_ref).unwrap();
        let image = ImageInfo {
            id: img.id.clone(),
            layers: images.layer_dirs(&img).unwrap(),
            config: img.config.config().clone(),
        };
        Self {
            nets: Networks::open(root.path())
                .unwrap()
                .with_helper_exe(&common::tug_bin())
                .with_dns_upstreams(Vec::new()),
            vols: Volumes::open(root.path()).unwrap(),
            store: ContainerStore::open(root.path())
                .unwrap()
                .with_exe(common::tug_bin()),
            image,
            image_ref,
            root,
            containers: Vec::new(),
            networks: Vec::new(),
            finished: false,
        }
    }

    fn network(&mut self, name: &str) -> NetworkInfo {
        let n = self
            .nets
            .create(&NetworkSpec {
                name: name.into(),
                ..Default::default()
            })
            .unwrap();
        self.networks.push(n.clone());
        n
    }

    /// Creates and starts container `name` of `service` on `network` (the key of its
    /// namespace and endpoints is its name), with `mounts` and `cmd`.
    fn run(
        &mut self,
        name: &str,
        service: &str,
        network: &str,
        mounts: Vec<Mount>,
        user: Option<&str>,
        cmd: &[&str],
    ) -> (String, std::net::Ipv4Addr) {
        let ns = self.nets.create_netns(name).unwrap();
        self.containers.push(name.to_string());
        let eps = self
            .nets
            .connect_all(
                &ns,
                vec![(
                    network.to_string(),
                    EndpointSpec {
                        container_id: name.into(),
                        container_name: name.into(),
                        service: Some(service.into()),
                        project: Some("proj".into()),
                        hostname: Some(service.into()),
                        ..Default::default()
                    },
                )],
            )
            .unwrap();
        let ep = &eps[0];
        let config = ContainerConfig {
            name: name.into(),
            image: self.image_ref.clone(),
            image_id: self.image.id.clone(),
            command: Some(cmd.iter().map(|s| (*s).to_string()).collect()),
            hostname: Some(service.into()),
            user: user.map(str::to_string),
            mounts,
            network: NetworkMode::Netns(ns),
            etc_hosts: Some(
                files::hosts_file(&files::HostsSpec {
                    hostname: service.into(),
                    ip: Some(ep.ip),
                    gateway: Some(ep.gateway),
                    extra_hosts: vec!["outside-name:192.0.2.10".into()],
                    ..Default::default()
                })
                .unwrap(),
            ),
            resolv_conf: Some(files::resolv_conf(&files::ResolvSpec {
                embedded: Some(ep.gateway),
                ..Default::default()
            })),
            ..Default::default()
        };
        let id = self.store.create(config, &self.image).unwrap();
        self.store.start(&id, false).unwrap();
        (id, ep.ip)
    }

    /// `tug container exec NAME cmd…` → (success, stdout+stderr).
    fn exec(&self, name: &str, cmd: &[&str]) -> (bool, String) {
        let out = common::run(
            common::tug(self.root.path())
                .args(["container", "exec", name])
                .args(cmd),
        );
        let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
        s.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), s)
    }

    /// Stops and removes a container and everything of its network (as `down` does).
    fn remove(&mut self, name: &str) {
        let _ = self.store.remove(name, true);
        self.nets.disconnect_all(name).unwrap();
        self.containers.retain(|c| c != name);
    }

    fn teardown(&mut self) {
        for c in self.containers.clone() {
            let _ = self.store.remove(&c, true);
            let _ = self.nets.disconnect_all(&c);
        }
        self.containers.clear();
        for n in &self.networks {
            let _ = self.nets.remove(&n.name, true);
        }
    }

    fn finish(mut self) {
        self.teardown();
        self.finished = true;
        let links = netlink::links(None).unwrap();
        for n in &self.networks {
            assert!(
                !links.iter().any(|l| l.name == n.bridge),
                "bridge {} remains",
                n.bridge
            );
        }
        let root = std::fs::canonicalize(self.root.path()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            let left: Vec<&str> = mi
                .lines()
                .filter(|l| l.contains(&*root.to_string_lossy()))
                .collect();
            if left.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "mounts remain: {left:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            std::fs::read_dir(root.join("netns"))
                .map(Iterator::count)
                .unwrap_or(0)
                == 0,
            "namespaces remain"
        );
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if !self.finished {
            self.teardown();
        }
    }
}

fn volume_mount(vols: &Volumes, name: &str, image: &ImageInfo, target: &str, uid: u32) -> Mount {
    vols.ensure(&VolumeSpec {
        name: name.into(),
        ..Default::default()
    })
    .unwrap();
    let source = vols
        .prepare(
            name,
            &Prepare {
                layers: image.layers.clone(),
                target: target.into(),
                uid,
                gid: uid,
                ..Default::default()
            },
        )
        .unwrap();
    Mount {
        kind: MountKind::Volume,
        source,
        target: target.into(),
        ..Default::default()
    }
}

#[test]
fn network_containers_by_name_volume_survives_recreation_and_ports() {
    if !require_root() {
        return;
    }
    let mut st = Stack::new();
    let net = unique("app");
    st.network(&net);
    let data = unique("data");
    let m = volume_mount(&st.vols, &data, &st.image, "/srv", 0);
    let ro_dir = st.root.path().join("ro-src");
    std::fs::create_dir_all(&ro_dir).unwrap();
    std::fs::write(ro_dir.join("conf"), "x").unwrap();
    let ro = Mount {
        kind: MountKind::Bind,
        source: ro_dir.clone(),
        target: "/conf".into(),
        read_only: true,
        options: vec!["rprivate".into()],
    };
    let web = unique("web");
    let (_, web_ip) = st.run(
        &web,
        "web",
        &net,
        vec![m.clone(), ro],
        None,
        &[
            "sh",
            "-c",
            "echo persisted > /srv/index.html; exec httpd -f -p 80 -h /srv",
        ],
    );
    let cli = unique("cli");
    st.run(&cli, "client", &net, Vec::new(), None, &["sleep", "1000"]);
    // By service name, container name and service.project, through the container's own
    // resolv.conf (pointing at the network's DNS server).
    for host in ["web", web.as_str(), "web.proj"] {
        let url = format!("http://{host}/");
        let mut last = String::new();
        common::eventually(&format!("wget {url}"), Duration::from_secs(20), || {
            let (ok, out) = st.exec(&cli, &["wget", "-q", "-O", "-", &url]);
            last = out;
            ok && last.contains("persisted")
        });
    }
    let (ok, out) = st.exec(&cli, &["nslookup", "web"]);
    assert!(ok && out.contains(&web_ip.to_string()), "{out}");
    // /etc/hosts: own hostname and extra_hosts.
    let (_, hosts) = st.exec(&cli, &["cat", "/etc/hosts"]);
    assert!(
        hosts.contains("outside-name") && hosts.contains("client"),
        "{hosts}"
    );
    // read_only bind is enforced.
    let (ok, out) = st.exec(&web, &["sh", "-c", "echo y > /conf/conf"]);
    assert!(!ok, "wrote to a read-only bind: {out}");
    assert_eq!(std::fs::read_to_string(ro_dir.join("conf")).unwrap(), "x");
    // Published port from the real container.
    let published = st
        .nets
        .publish(
            &web,
            "web",
            web_ip,
            &ports::parse_short("127.0.0.1::80").unwrap(),
        )
        .unwrap();
    let port = published[0].host_port;
    common::eventually("published port answers", Duration::from_secs(10), || {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
        let mut b = String::new();
        let _ = s.read_to_string(&mut b);
        b.contains("persisted")
    });
    // down + up: the web container is removed and recreated with the same volume; the data
    // is still there and the name now resolves to the new address.
    st.remove(&web);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    let m2 = volume_mount(&st.vols, &data, &st.image, "/srv", 0);
    assert_eq!(m2.source, m.source);
    let web2 = unique("web");
    let (_, web2_ip) = st.run(
        &web2,
        "web",
        &net,
        vec![m2],
        None,
        &["httpd", "-f", "-p", "80", "-h", "/srv"],
    );
    assert_ne!(web_ip, web2_ip);
    let mut last = String::new();
    let mut tries = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out) = st.exec(&cli, &["wget", "-q", "-O", "-", "http://web/"]);
        if ok && out.contains("persisted") {
            break;
        }
        last = format!("{last}\n--- {out}");
        tries += 1;
        if Instant::now() > deadline {
            let (_, ns) = st.exec(&cli, &["nslookup", "web"]);
            let (_, ps) = st.exec(&web2, &["ps"]);
            panic!(
                "recreated web does not answer after {tries} tries (new ip {web2_ip}): {last}\nnslookup: {ns}\nps: {ps}"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // down -v: the volume and its data are gone.
    st.remove(&web2);
    st.vols.remove(&data, &[]).unwrap();
    assert!(!m.source.exists());
    st.finish();
}

#[test]
fn network_containers_volume_copy_up_and_non_root_owner() {
    if !require_root() {
        return;
    }
    let mut st = Stack::new();
    let net = unique("own");
    st.network(&net);
    // Copy-up: a new volume over /etc has the image's files inside the container.
    let etc = unique("etc");
    let m_etc = volume_mount(&st.vols, &etc, &st.image, "/etc", 0);
    // Ownership: the image lacks /home/app/data; USER 1000 can write to its volume.
    let own = unique("own");
    let m_own = volume_mount(&st.vols, &own, &st.image, "/home/app/data", 1000);
    let c = unique("c");
    st.run(
        &c,
        "svc",
        &net,
        vec![m_etc.clone(), m_own.clone()],
        Some("1000:1000"),
        &["sleep", "1000"],
    );
    let (ok, out) = st.exec(&c, &["cat", "/etc/group"]);
    assert!(ok && out.contains("extra:x:2000"), "{out}");
    let (ok, out) = st.exec(&c, &["sh", "-c", "echo mine > /home/app/data/f && id -u"]);
    assert!(ok && out.trim() == "1000", "{out}");
    let f: &Path = &m_own.source.join("f");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(f).unwrap().uid(), 1000);
    st.remove(&c);
    let _: PathBuf = m_etc.source;
    st.finish();
}
