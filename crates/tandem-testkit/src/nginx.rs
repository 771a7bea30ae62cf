//! Real nginx backends (Debian package `nginx-light` or `nginx`), one worker each, in a
//! temporary directory.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::proc::Proc;

pub struct Nginx {
    pub proc: Proc,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Start nginx answering `name` on `/` and `ok` on `/healthz`.
    pub fn start(name: &str) -> Nginx {
        let bin = crate::require_program("nginx", "nginx-light");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let d = dir.path().display().to_string();
        for attempt in 0..5 {
            let port = crate::free_port();
            let conf = format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\nerror_log {d}/error.log warn;\npid {d}/nginx.pid;\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                 fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
                 keepalive_requests 100000;\n\
                 server {{\n    listen 127.0.0.1:{port};\n    location /healthz {{ return 200 'ok\\n'; }}\n\
                 location / {{ return 200 '{name}\\n'; }}\n  }}\n}}\n"
            );
            let path = dir.path().join("nginx.conf");
            std::fs::write(&path, conf).unwrap_or_else(|e| panic!("writing nginx.conf: {e}"));
            let mut cmd = Command::new(&bin);
            cmd.arg("-p").arg(dir.path()).arg("-c").arg(&path);
            let proc = Proc::spawn(&format!("nginx {name}"), cmd);
            let addr: SocketAddr = format!("127.0.0.1:{port}")
                .parse()
                .unwrap_or_else(|_| unreachable!());
            let up = crate::wait_until(Duration::from_secs(10), || {
                crate::http::get(addr, "/healthz").is_ok_and(|r| r.status == 200)
            });
            if up {
                return Nginx {
                    proc,
                    addr,
                    _dir: dir,
                };
            }
            eprintln!(
                "nginx did not start on port {port} (attempt {attempt}): {:?}",
                proc.output()
            );
        }
        panic!("nginx did not start");
    }
}
