//! The imported VIPs as an Always On TOML config, with only the keys the
//! HAProxy file set (every other key keeps its default).

use std::fmt::Write as _;

use super::{convert::Vip, Options};

fn q(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

pub fn toml(vips: &[Vip], options: &Options) -> String {
    let mut out = String::from("# Imported from an HAProxy configuration by `alwayson import-haproxy`.\n");
    let _ = writeln!(out, "[global]\ninterface = {}", q(&options.interface));
    if !options.nat_address.is_empty() {
        let list: Vec<String> = options.nat_address.iter().map(|a| q(&a.to_string())).collect();
        let _ = writeln!(out, "nat_address = [{}]", list.join(", "));
    }
    for vip in vips {
        let s = &vip.settings;
        let _ =
            writeln!(out, "\n[[vip]]\nname = {}\naddress = {}", q(&vip.name), q(&vip.address.to_string()));
        let _ = writeln!(out, "port = {}\nprotocol = \"tcp\"\nmode = \"{}\"", vip.port, options.mode);
        if let Some(a) = vip.nat_address {
            let _ = writeln!(out, "nat_address = {}", q(&a.to_string()));
        }
        if let Some(path) = &s.http_path {
            let _ = writeln!(out, "check = \"http\"\nhttp_path = {}", q(path));
            if let Some(host) = &s.http_host {
                let _ = writeln!(out, "http_host = {}", q(host));
            }
            if !s.http_status.is_empty() {
                let codes: Vec<String> = s.http_status.iter().map(u16::to_string).collect();
                let _ = writeln!(out, "http_status = [{}]", codes.join(", "));
            }
        }
        if let Some(ms) = s.timeout_check_ms {
            let _ = writeln!(out, "timeout = \"{ms}ms\"");
        }
        if s.allbackups {
            let _ = writeln!(out, "allbackups = true");
        }
        for b in &vip.backends {
            let o = &b.opts;
            let _ = writeln!(
                out,
                "\n  [[vip.backend]]\n  name = {}\n  address = {}",
                q(&b.name),
                q(&b.address.to_string())
            );
            if let Some(port) = b.port {
                let _ = writeln!(out, "  port = {port}");
            }
            if let Some(weight) = o.weight {
                let _ = writeln!(out, "  weight = {weight}");
            }
            if o.backup {
                let _ = writeln!(out, "  backup = true");
            }
            if !o.check {
                // HAProxy takes a server without `check` as always up.
                let _ = writeln!(out, "  check = \"none\"");
            }
            if let Some(ms) = o.inter_ms {
                let _ = writeln!(out, "  inter = \"{ms}ms\"");
            }
            if let Some(rise) = o.rise {
                let _ = writeln!(out, "  rise = {rise}");
            }
            if let Some(fall) = o.fall {
                let _ = writeln!(out, "  fall = {fall}");
            }
            if let Some(port) = o.check_port {
                let _ = writeln!(out, "  check_port = {port}");
            }
            if let Some(a) = o.check_address {
                let _ = writeln!(out, "  check_address = {}", q(&a.to_string()));
            }
            if let Some(ms) = o.slowstart_ms {
                let _ = writeln!(out, "  slowstart = \"{ms}ms\"");
            }
        }
    }
    out
}
