//! Import of Keepalived's configuration: the `vrrp_instance` blocks of a `keepalived.conf`
//! (with the `vrrp_script`s they track and `global_defs` they inherit) become `[[vip]]`
//! sections. What tandem does differently becomes a `# note:` comment; what it cannot do is an
//! error naming the line.

use std::collections::HashMap;
use std::fmt::Write;

/// Why a file could not be imported.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ImportError {
    pub line: usize,
    pub message: String,
}

fn err<T>(line: usize, message: impl Into<String>) -> Result<T, ImportError> {
    Err(ImportError {
        line,
        message: message.into(),
    })
}

/// One statement: its words, and the statements of its block if it opens one.
#[derive(Debug, Clone)]
struct Stmt {
    line: usize,
    words: Vec<String>,
    block: Option<Vec<Stmt>>,
}

impl Stmt {
    fn key(&self) -> &str {
        self.words.first().map(String::as_str).unwrap_or("")
    }

    fn arg(&self, i: usize) -> Option<&str> {
        self.words.get(i).map(String::as_str)
    }

    fn children(&self) -> &[Stmt] {
        self.block.as_deref().unwrap_or(&[])
    }
}

/// Split into lines of words: `#` and `!` start comments, double quotes group words.
fn lex(text: &str) -> Result<Vec<(usize, Vec<String>)>, ImportError> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let mut words = Vec::new();
        let mut chars = raw.chars().peekable();
        while let Some(&c) = chars.peek() {
            match c {
                '#' | '!' => break,
                c if c.is_whitespace() => {
                    chars.next();
                }
                '{' | '}' => {
                    chars.next();
                    words.push(c.to_string());
                }
                '"' => {
                    chars.next();
                    let mut w = String::new();
                    loop {
                        match chars.next() {
                            Some('"') => break,
                            Some(c) => w.push(c),
                            None => return err(line, "unterminated quoted string"),
                        }
                    }
                    words.push(w);
                }
                _ => {
                    let mut w = String::new();
                    while let Some(&c) = chars.peek() {
                        if c.is_whitespace() || matches!(c, '{' | '}' | '"' | '#' | '!') {
                            break;
                        }
                        w.push(c);
                        chars.next();
                    }
                    words.push(w);
                }
            }
        }
        if !words.is_empty() {
            out.push((line, words));
        }
    }
    Ok(out)
}

/// Build the statement tree. A `{` opens a block for the statement before it (on its line or
/// the line above); `}` closes the innermost block.
fn parse(text: &str) -> Result<Vec<Stmt>, ImportError> {
    let mut stack: Vec<Vec<Stmt>> = vec![Vec::new()];
    for (line, words) in lex(text)? {
        let mut cur: Vec<String> = Vec::new();
        for w in words {
            match w.as_str() {
                "{" => {
                    let top = stack.last_mut().ok_or(ImportError {
                        line,
                        message: "internal: empty stack".into(),
                    })?;
                    let opener = if cur.is_empty() {
                        match top.pop() {
                            Some(s) if s.block.is_none() => s,
                            _ => return err(line, "`{` without a keyword before it"),
                        }
                    } else {
                        Stmt {
                            line,
                            words: std::mem::take(&mut cur),
                            block: None,
                        }
                    };
                    top.push(opener);
                    stack.push(Vec::new());
                }
                "}" => {
                    if let Some(top) = stack.last_mut() {
                        if !cur.is_empty() {
                            top.push(Stmt {
                                line,
                                words: std::mem::take(&mut cur),
                                block: None,
                            });
                        }
                    }
                    if stack.len() < 2 {
                        return err(line, "`}` without a matching `{`");
                    }
                    let done = stack.pop().unwrap_or_default();
                    if let Some(parent) = stack.last_mut().and_then(|p| p.last_mut()) {
                        parent.block = Some(done);
                    }
                }
                _ => cur.push(w),
            }
        }
        if !cur.is_empty() {
            if let Some(top) = stack.last_mut() {
                top.push(Stmt {
                    line,
                    words: cur,
                    block: None,
                });
            }
        }
    }
    if stack.len() != 1 {
        let open = stack
            .iter()
            .rev()
            .nth(1)
            .and_then(|p| p.last())
            .map(|s| s.line)
            .unwrap_or(0);
        return err(open, "block opened here is never closed (missing `}`)");
    }
    Ok(stack.pop().unwrap_or_default())
}

/// Keepalived writes durations as seconds, possibly with decimals.
fn seconds(s: &Stmt, i: usize) -> Result<String, ImportError> {
    let v = s.arg(i).unwrap_or("");
    let secs: f64 = v
        .parse()
        .ok()
        .filter(|x: &f64| x.is_finite() && *x >= 0.0)
        .ok_or(ImportError {
            line: s.line,
            message: format!("{}: {v:?} is not a number of seconds", s.key()),
        })?;
    let ms = (secs * 1000.0).round() as u64;
    Ok(if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    })
}

fn number<T: std::str::FromStr>(s: &Stmt, i: usize) -> Result<T, ImportError> {
    let v = s.arg(i).unwrap_or("");
    v.parse().or(err(
        s.line,
        format!("{}: {v:?} is not a valid number", s.key()),
    ))
}

fn quote(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(q, "\\u{:04x}", c as u32);
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// A `vrrp_script`.
#[derive(Default)]
struct Script {
    script: String,
    interval: Option<String>,
    timeout: Option<String>,
    weight: Option<i32>,
    rise: Option<u32>,
    fall: Option<u32>,
}

fn script_block(s: &Stmt) -> Result<Script, ImportError> {
    let mut sc = Script::default();
    for c in s.children() {
        match c.key() {
            "script" => sc.script = c.words[1..].join(" "),
            "interval" => sc.interval = Some(seconds(c, 1)?),
            "timeout" => sc.timeout = Some(seconds(c, 1)?),
            "weight" => sc.weight = Some(number(c, 1)?),
            "rise" => sc.rise = Some(number(c, 1)?),
            "fall" => sc.fall = Some(number(c, 1)?),
            _ => {}
        }
    }
    if sc.script.is_empty() {
        return err(s.line, "vrrp_script without a `script` line");
    }
    Ok(sc)
}

/// Convert `keepalived.conf` text into `[[vip]]` TOML.
pub fn keepalived_to_toml(text: &str) -> Result<String, ImportError> {
    let top = parse(text)?;
    let mut version = 2u8; // Keepalived's default
    let mut scripts = HashMap::new();
    let mut out = String::from("# Imported from keepalived.conf by `tandem check --keepalived`.\n");
    for s in &top {
        match s.key() {
            "global_defs" => {
                for c in s.children() {
                    if c.key() == "vrrp_version" {
                        version = number(c, 1)?;
                    }
                }
            }
            "vrrp_script" => {
                let name = s.arg(1).ok_or(ImportError {
                    line: s.line,
                    message: "vrrp_script without a name".into(),
                })?;
                scripts.insert(name.to_string(), script_block(s)?);
            }
            "include" => {
                return err(
                    s.line,
                    "`include` is not followed: import the included file too",
                )
            }
            _ => {}
        }
    }
    let mut n = 0;
    for s in top.iter().filter(|s| s.key() == "vrrp_instance") {
        out.push('\n');
        instance(s, version, &scripts, &mut out)?;
        n += 1;
    }
    for s in top.iter().filter(|s| s.key() == "vrrp_sync_group") {
        let _ = writeln!(
            out,
            "# note: vrrp_sync_group {} (line {}) has no equivalent: each [[vip]] is elected on its own",
            s.arg(1).unwrap_or(""),
            s.line
        );
    }
    if n == 0 {
        return err(1, "no vrrp_instance block found");
    }
    Ok(out)
}

fn instance(
    s: &Stmt,
    global_version: u8,
    scripts: &HashMap<String, Script>,
    out: &mut String,
) -> Result<(), ImportError> {
    let name = s.arg(1).unwrap_or("").to_string();
    let mut fields: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut tracks: Vec<String> = Vec::new();
    let (mut iface, mut vrid, mut addrs) = (None, None, Vec::new());
    let mut version = global_version;
    let mut notify: Vec<(String, String)> = Vec::new();
    let mut advert: Option<String> = None;
    for c in s.children() {
        let l = c.line;
        match c.key() {
            "interface" => iface = c.arg(1).map(str::to_string),
            "virtual_router_id" => vrid = Some(number::<u8>(c, 1)?),
            "priority" => fields.push(format!("priority = {}", number::<u8>(c, 1)?)),
            "advert_int" => advert = Some(seconds(c, 1)?),
            "version" => version = number(c, 1)?,
            "nopreempt" => fields.push("preempt = false".into()),
            "preempt" => {}
            "preempt_delay" => fields.push(format!("preempt_delay = {}", quote(&seconds(c, 1)?))),
            "state" => notes.push(format!(
                "state {} (line {l}): tandem starts every router as backup; priority decides",
                c.arg(1).unwrap_or("")
            )),
            "garp_master_repeat" => fields.push(format!("garp_repeat = {}", number::<u32>(c, 1)?)),
            "garp_interval" => fields.push(format!("garp_interval = {}", quote(&seconds(c, 1)?))),
            "garp_master_refresh" => {
                fields.push(format!("garp_refresh = {}", quote(&seconds(c, 1)?)))
            }
            "garp_master_delay" => notes.push(format!(
                "garp_master_delay (line {l}): tandem sends its gratuitous ARPs at the takeover, and again whenever it sees another master"
            )),
            "unicast_src_ip" => notes.push(format!(
                "unicast_src_ip (line {l}): tandem sends from the interface's first IPv4 address"
            )),
            "unicast_peer" => {
                let peers: Vec<String> = c
                    .children()
                    .iter()
                    .filter_map(|p| p.arg(0))
                    .map(|p| {
                        p.parse::<std::net::Ipv4Addr>()
                            .map(|ip| quote(&ip.to_string()))
                            .or(err(l, format!("unicast_peer: {p:?} is not an IPv4 address")))
                    })
                    .collect::<Result<_, _>>()?;
                fields.push(format!("unicast_peers = [{}]", peers.join(", ")));
            }
            "virtual_ipaddress" => {
                for a in c.children() {
                    addrs.push(vip_address(a, iface.as_deref())?);
                }
            }
            "notify" | "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" => {
                notify.push((c.key().to_string(), c.words[1..].join(" ")))
            }
            "track_script" => {
                for t in c.children() {
                    let Some(sc) = scripts.get(t.key()) else {
                        return err(t.line, format!("track_script {:?}: no vrrp_script of that name", t.key()));
                    };
                    let weight = match (t.arg(1), t.arg(2)) {
                        (Some("weight"), Some(_)) => number(t, 2)?,
                        _ => sc.weight.unwrap_or(0),
                    };
                    let mut tr = format!("\n[[vip.track]]\nscript = {}\n", quote(&sc.script));
                    if let Some(i) = &sc.interval {
                        let _ = writeln!(tr, "interval = {}", quote(i));
                    }
                    if let Some(i) = &sc.timeout {
                        let _ = writeln!(tr, "timeout = {}", quote(i));
                    }
                    let _ = writeln!(tr, "weight = {weight}");
                    if let Some(r) = sc.rise {
                        let _ = writeln!(tr, "rise = {r}");
                    }
                    if let Some(f) = sc.fall {
                        let _ = writeln!(tr, "fall = {f}");
                    }
                    tracks.push(tr);
                }
            }
            "track_interface" => {
                for t in c.children() {
                    let weight: i32 = match (t.arg(1), t.arg(2)) {
                        (Some("weight"), Some(_)) => number(t, 2)?,
                        _ => 0,
                    };
                    tracks.push(format!(
                        "\n[[vip.track]]\ninterface = {}\ninterval = \"100ms\"\nweight = {weight}\n",
                        quote(t.key())
                    ));
                }
            }
            "authentication" => notes.push(format!(
                "authentication (line {l}) is dropped: VRRPv3 has none and tandem refuses authenticated v2 adverts; remove it on the Keepalived routers that stay"
            )),
            "use_vmac" | "vmac_xmit_base" => {
                return err(l, format!("{}: virtual MAC addresses are not supported", c.key()))
            }
            "virtual_ipaddress_excluded" | "virtual_routes" | "virtual_rules" => {
                return err(l, format!("{} is not supported: move those addresses or routes to a notify command", c.key()))
            }
            other => notes.push(format!("{other} (line {l}) is ignored")),
        }
    }
    let iface = iface.ok_or(ImportError {
        line: s.line,
        message: format!("vrrp_instance {name}: no `interface`"),
    })?;
    let vrid = vrid.ok_or(ImportError {
        line: s.line,
        message: format!("vrrp_instance {name}: no `virtual_router_id`"),
    })?;
    if addrs.is_empty() {
        return err(
            s.line,
            format!("vrrp_instance {name}: no `virtual_ipaddress`"),
        );
    }
    if !matches!(version, 2 | 3) {
        return err(
            s.line,
            format!("vrrp_instance {name}: VRRP version {version}"),
        );
    }
    let _ = writeln!(out, "# vrrp_instance {name} (line {})", s.line);
    for n in &notes {
        let _ = writeln!(out, "# note: {n}");
    }
    out.push_str("[[vip]]\n");
    if !name.is_empty() {
        let _ = writeln!(out, "name = {}", quote(&name));
    }
    let _ = writeln!(out, "mode = \"vrrp\"\ninterface = {}", quote(&iface));
    let list: Vec<String> = addrs.iter().map(|a| quote(a)).collect();
    let _ = writeln!(out, "addresses = [{}]", list.join(", "));
    let _ = writeln!(out, "vrid = {vrid}\nversion = {version}");
    // Keepalived's default is 1 s.
    let _ = writeln!(
        out,
        "advert_int = {}",
        quote(advert.as_deref().unwrap_or("1s"))
    );
    for f in &fields {
        let _ = writeln!(out, "{f}");
    }
    if let Some(cmd) = notify_command(&notify, &name) {
        let _ = writeln!(out, "notify = {}", quote(&cmd));
    }
    for t in &tracks {
        out.push_str(t);
    }
    Ok(())
}

/// `10.0.0.100/24 dev eth0 label eth0:1`: the address; another `dev` than the instance's is
/// an error (tandem puts a VIP's addresses on its interface).
fn vip_address(a: &Stmt, iface: Option<&str>) -> Result<String, ImportError> {
    let addr = a.key();
    let mut words = a.words.iter().skip(1);
    while let Some(w) = words.next() {
        match w.as_str() {
            "dev" => {
                let dev = words.next().map(String::as_str).unwrap_or("");
                if iface.is_some_and(|i| i != dev) {
                    return err(a.line, format!("{addr}: on {dev}, not on the instance's interface; give it a [[vip]] of its own"));
                }
            }
            "label" | "brd" | "scope" => {
                words.next();
            }
            other => return err(a.line, format!("{addr}: {other:?} is not supported")),
        }
    }
    crate::config::parse_addr(addr).map_err(|e| ImportError {
        line: a.line,
        message: e,
    })?;
    Ok(addr.to_string())
}

/// Keepalived runs `notify` with the arguments `INSTANCE name STATE priority`, and the
/// per-state scripts without arguments; tandem runs one command with the state in
/// `$TANDEM_VIP_STATE`. The import keeps both conventions working.
fn notify_command(notify: &[(String, String)], name: &str) -> Option<String> {
    if notify.is_empty() {
        return None;
    }
    let mut cases = Vec::new();
    let mut general = None;
    for (k, cmd) in notify {
        match k.as_str() {
            "notify" => general = Some(cmd.clone()),
            "notify_master" => cases.push(format!("master) {cmd} ;;")),
            "notify_backup" => cases.push(format!("backup) {cmd} ;;")),
            "notify_fault" | "notify_stop" => cases.push(format!("initialize) {cmd} ;;")),
            _ => {}
        }
    }
    let mut parts = Vec::new();
    if !cases.is_empty() {
        parts.push(format!(
            "case \"$TANDEM_VIP_STATE\" in {} esac",
            cases.join(" ")
        ));
    }
    if let Some(g) = general {
        parts.push(format!(
            "{g} INSTANCE {name} \"$(echo $TANDEM_VIP_STATE | tr a-z A-Z)\""
        ));
    }
    Some(parts.join("; "))
}

#[cfg(test)]
mod tests;
