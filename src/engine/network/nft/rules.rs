//! tug's packet-filter rules as data: a network's table (chains on netfilter hooks, each a
//! list of rules of matches and a verdict) and the accept rules it adds to a Docker host's
//! `ip filter FORWARD`. What the rules are is decided here, in one place, from the network's
//! description; [`Table::script`] and [`Rule::nft`] render them for `nft -f`,
//! [`Rule::iptables`] for `iptables-nft-restore` (the chain that belongs to iptables-nft).

use std::fmt::Write as _;

/// A network's own table, `ip <bridge>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The table's name: the bridge's.
    pub name: String,
    /// Its base chains, in the order they are written.
    pub chains: Vec<Chain>,
}

/// A base chain: hooked into netfilter at a priority, with policy accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// The chain's name in the table.
    pub name: &'static str,
    /// Where it hooks in.
    pub hook: Hook,
    /// Its rules, in order.
    pub rules: Vec<Rule>,
}

/// The netfilter hooks tug's chains use, with their chain type and priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `type nat hook postrouting priority srcnat`.
    Postrouting,
    /// `type filter hook forward priority filter`.
    Forward,
    /// `type filter hook input priority filter`.
    Input,
}

/// One rule: all its matches, then its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What a packet must match, in order.
    pub matches: Vec<Match>,
    /// What happens to a packet that matches.
    pub verdict: Verdict,
}

/// A match of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// The packet came in through the interface (or, negated, through another one).
    InIface { name: String, not: bool },
    /// The packet goes out through the interface (or, negated, through another one).
    OutIface { name: String, not: bool },
    /// The source address is in the subnet (`10.0.0.0/24`).
    SourceNet(String),
    /// The destination is the address.
    DestAddr(String),
    /// UDP to the port.
    UdpDport(u16),
    /// TCP to the port.
    TcpDport(u16),
    /// TCP, any port.
    Tcp,
    /// Connection tracking says the packet starts a new connection.
    CtNew,
    /// Connection tracking says the packet belongs to a known connection.
    CtEstablished,
}

/// What a matching packet gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Passes this chain.
    Accept,
    /// Dropped silently.
    Drop,
    /// Refused at once: an ICMP error (port unreachable).
    Reject,
    /// Refused at once with a TCP reset.
    RejectTcpReset,
    /// Its source address becomes the outgoing interface's.
    Masquerade,
}

/// The chain of an internal network's table that keeps its containers off the host.
pub const INTERNAL_INPUT: &str = "input";

/// What a network's rules are decided from.
#[derive(Debug, Clone)]
pub struct NetRules {
    /// The bridge (and table) name.
    pub bridge: String,
    /// The network's subnet.
    pub subnet: String,
    /// The bridge's own address (the network's DNS server listens there).
    pub gateway: String,
    /// No traffic to or from outside the network.
    pub internal: bool,
}

fn iif(name: &str, not: bool) -> Match {
    Match::InIface {
        name: name.to_string(),
        not,
    }
}

fn oif(name: &str, not: bool) -> Match {
    Match::OutIface {
        name: name.to_string(),
        not,
    }
}

fn rule(matches: Vec<Match>, verdict: Verdict) -> Rule {
    Rule { matches, verdict }
}

impl Table {
    /// The table of the network `r`:
    /// - `postrouting`: traffic from the subnet leaving through another interface is
    ///   masqueraded (outbound access), unless the network is internal;
    /// - `forward`: no new connection enters the bridge from another interface (networks are
    ///   isolated from each other); an internal network forwards nothing in or out at all;
    /// - `input`, internal networks only: what they send to the host itself never crosses the
    ///   forward hook, so only the network's DNS server on the gateway and replies to
    ///   connections the host opened (port proxies) get in; the rest is refused at once
    ///   (a reset, an ICMP error) rather than left to time out.
    #[must_use]
    pub fn for_network(r: &NetRules) -> Self {
        let br = r.bridge.as_str();
        let mut postrouting = Vec::new();
        if !r.internal {
            postrouting.push(rule(
                vec![Match::SourceNet(r.subnet.clone()), oif(br, true)],
                Verdict::Masquerade,
            ));
        }
        let mut forward = vec![rule(
            vec![oif(br, false), iif(br, true), Match::CtNew],
            Verdict::Drop,
        )];
        let mut chains = Vec::new();
        chains.push(Chain {
            name: "postrouting",
            hook: Hook::Postrouting,
            rules: postrouting,
        });
        if r.internal {
            forward.push(rule(vec![iif(br, false), oif(br, true)], Verdict::Drop));
            forward.push(rule(vec![oif(br, false), iif(br, true)], Verdict::Drop));
        }
        chains.push(Chain {
            name: "forward",
            hook: Hook::Forward,
            rules: forward,
        });
        if r.internal {
            let gw = || Match::DestAddr(r.gateway.clone());
            chains.push(Chain {
                name: INTERNAL_INPUT,
                hook: Hook::Input,
                rules: vec![
                    rule(
                        vec![iif(br, false), gw(), Match::UdpDport(53)],
                        Verdict::Accept,
                    ),
                    rule(
                        vec![iif(br, false), gw(), Match::TcpDport(53)],
                        Verdict::Accept,
                    ),
                    rule(vec![iif(br, false), Match::CtEstablished], Verdict::Accept),
                    rule(vec![iif(br, false), Match::Tcp], Verdict::RejectTcpReset),
                    rule(vec![iif(br, false)], Verdict::Reject),
                ],
            });
        }
        Self {
            name: r.bridge.clone(),
            chains,
        }
    }

    /// The `nft -f` script that replaces the table as a whole, atomically (`add` makes the
    /// `delete` valid when the table is new).
    #[must_use]
    pub fn script(&self) -> String {
        let t = &self.name;
        let mut s = format!("add table ip {t}\ndelete table ip {t}\ntable ip {t} {{\n");
        for c in &self.chains {
            let (kind, hook, prio) = match c.hook {
                Hook::Postrouting => ("nat", "postrouting", "srcnat"),
                Hook::Forward => ("filter", "forward", "filter"),
                Hook::Input => ("filter", "input", "filter"),
            };
            let _ = writeln!(
                s,
                "  chain {} {{\n    type {kind} hook {hook} priority {prio}; policy accept;",
                c.name
            );
            for r in &c.rules {
                let _ = writeln!(s, "    {}", r.nft());
            }
            s.push_str("  }\n");
        }
        s.push_str("}\n");
        s
    }
}

/// The accept rules a network needs in a Docker host's `ip filter FORWARD` (whose policy is
/// drop), in the order they stand at the top of that chain: an internal network's traffic
/// inside its bridge; for the others, everything from the bridge and replies into it.
#[must_use]
pub fn forward_accepts(bridge: &str, internal: bool) -> Vec<Rule> {
    if internal {
        vec![rule(
            vec![iif(bridge, false), oif(bridge, false)],
            Verdict::Accept,
        )]
    } else {
        vec![
            rule(vec![iif(bridge, false)], Verdict::Accept),
            rule(
                vec![oif(bridge, false), Match::CtEstablished],
                Verdict::Accept,
            ),
        ]
    }
}

/// The comment that marks tug's rules of `bridge` in chains that are not tug's.
#[must_use]
pub fn tag(bridge: &str) -> String {
    format!("tug:{bridge}")
}

impl Rule {
    /// The rule in nft's syntax.
    #[must_use]
    pub fn nft(&self) -> String {
        let mut parts: Vec<String> = self.matches.iter().map(Match::nft).collect();
        parts.push(
            match self.verdict {
                Verdict::Accept => "accept",
                Verdict::Drop => "drop",
                Verdict::Reject => "reject",
                Verdict::RejectTcpReset => "reject with tcp reset",
                Verdict::Masquerade => "masquerade",
            }
            .to_string(),
        );
        parts.join(" ")
    }

    /// The rule as `iptables` arguments after the chain name, with `comment` (the forward
    /// accept rules only need interfaces, conntrack and accept; anything else is `None`).
    #[must_use]
    pub fn iptables(&self, comment: &str) -> Option<Vec<String>> {
        let mut args: Vec<String> = Vec::new();
        for m in &self.matches {
            match m {
                Match::InIface { name, not: false } => args.extend(["-i".into(), name.clone()]),
                Match::OutIface { name, not: false } => args.extend(["-o".into(), name.clone()]),
                Match::CtEstablished => args.extend(
                    ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"].map(String::from),
                ),
                _ => return None,
            }
        }
        args.extend(["-m", "comment", "--comment", comment].map(String::from));
        match self.verdict {
            Verdict::Accept => args.extend(["-j", "ACCEPT"].map(String::from)),
            _ => return None,
        }
        Some(args)
    }
}

impl Match {
    fn nft(&self) -> String {
        let neg = |not: bool| if not { "!= " } else { "" };
        match self {
            Match::InIface { name, not } => format!("iifname {}\"{name}\"", neg(*not)),
            Match::OutIface { name, not } => format!("oifname {}\"{name}\"", neg(*not)),
            Match::SourceNet(n) => format!("ip saddr {n}"),
            Match::DestAddr(a) => format!("ip daddr {a}"),
            Match::UdpDport(p) => format!("udp dport {p}"),
            Match::TcpDport(p) => format!("tcp dport {p}"),
            Match::Tcp => "meta l4proto tcp".into(),
            Match::CtNew => "ct state new".into(),
            Match::CtEstablished => "ct state established,related".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(internal: bool) -> NetRules {
        NetRules {
            bridge: "tugabc".into(),
            subnet: "10.0.0.0/24".into(),
            gateway: "10.0.0.1".into(),
            internal,
        }
    }

    fn verdicts(t: &Table, chain: &str) -> Vec<Verdict> {
        t.chains
            .iter()
            .find(|c| c.name == chain)
            .map(|c| c.rules.iter().map(|r| r.verdict).collect())
            .unwrap_or_default()
    }

    #[test]
    fn internal_networks_have_no_masquerade_and_keep_off_the_host() {
        let t = Table::for_network(&net(true));
        assert!(verdicts(&t, "postrouting").is_empty());
        assert_eq!(verdicts(&t, "forward"), [Verdict::Drop; 3]);
        let input = &t
            .chains
            .iter()
            .find(|c| c.hook == Hook::Input)
            .unwrap()
            .rules;
        // Only DNS on the gateway and replies get in.
        let accepted: Vec<&Rule> = input
            .iter()
            .filter(|r| r.verdict == Verdict::Accept)
            .collect();
        assert_eq!(accepted.len(), 3);
        assert!(
            accepted[..2]
                .iter()
                .all(|r| r.matches.contains(&Match::DestAddr("10.0.0.1".into())))
        );
        assert_eq!(input.last().unwrap().verdict, Verdict::Reject);
    }

    #[test]
    fn other_networks_masquerade_their_subnet_and_take_no_new_connections_in() {
        let t = Table::for_network(&net(false));
        assert_eq!(verdicts(&t, "postrouting"), [Verdict::Masquerade]);
        assert_eq!(verdicts(&t, "forward"), [Verdict::Drop]);
        assert!(t.chains.iter().all(|c| c.hook != Hook::Input));
        assert_eq!(
            t.chains[0].rules[0].nft(),
            "ip saddr 10.0.0.0/24 oifname != \"tugabc\" masquerade"
        );
    }

    #[test]
    fn forward_accepts_render_for_nft_and_iptables() {
        let tag = tag("br1");
        let r = forward_accepts("br1", false);
        assert_eq!(r[0].nft(), "iifname \"br1\" accept");
        assert_eq!(
            r[1].nft(),
            "oifname \"br1\" ct state established,related accept"
        );
        assert_eq!(
            r[1].iptables(&tag).unwrap().join(" "),
            "-o br1 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment tug:br1 -j ACCEPT"
        );
        let r = forward_accepts("br1", true);
        assert_eq!(
            r[0].iptables(&tag).unwrap().join(" "),
            "-i br1 -o br1 -m comment --comment tug:br1 -j ACCEPT"
        );
        // A rule iptables' form cannot say is refused, not mistranslated.
        let t = Table::for_network(&net(false));
        assert_eq!(t.chains[0].rules[0].iptables(&tag), None);
    }
}
