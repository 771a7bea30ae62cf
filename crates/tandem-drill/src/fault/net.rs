//! Network faults made with iproute2 and nftables inside network namespaces of this host.

use super::run;

/// Drop `loss` ("30%") of the packets leaving `iface` in `ns`, as netem's loss does, with an
/// nftables table of its own (`nft`, Debian package nftables); returns the table's name.
pub(super) fn nft_loss(ns: &str, iface: &str, loss: &str) -> Result<String, String> {
    let pct: f64 = loss
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("loss {loss:?} is not a percentage"))?;
    let per_10k = (pct * 100.0).round().clamp(0.0, 10_000.0) as u32;
    let rule = if per_10k >= 10_000 {
        "drop".to_string()
    } else {
        format!("numgen random mod 10000 < {per_10k} drop")
    };
    let table = format!("tandem_drill_{}", std::process::id());
    let script = format!(
        "table netdev {table} {{\n  chain loss {{\n    type filter hook egress device \"{iface}\" priority 0;\n    {rule}\n  }}\n}}\n"
    );
    let file = std::env::temp_dir().join(format!("{table}.nft"));
    std::fs::write(&file, script).map_err(|e| format!("{}: {e}", file.display()))?;
    let file_arg = file.display().to_string();
    let r = run("ip", &["netns", "exec", ns, "nft", "-f", &file_arg]);
    let _ = std::fs::remove_file(&file);
    match r {
        Err(e) if e.contains("exec of") => {
            Err(format!("{e} (nft is in the Debian package nftables)"))
        }
        r => r.map(|()| table),
    }
}

/// The IPv4 addresses of a namespace's interfaces (global scope).
pub(super) fn netns_addrs(ns: &str) -> Result<Vec<String>, String> {
    let out = std::process::Command::new("ip")
        .args(["-n", ns, "-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip -n {ns} addr: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            w.find(|x| *x == "inet")?;
            Some(w.next()?.split('/').next()?.to_string())
        })
        .collect())
}
