//! What every benchmark does with its figures: a markdown table on stdout and
//! the raw numbers as JSON under `target/bench/` (or `$ALWAYSON_BENCH_DIR`).

use std::path::PathBuf;

use serde_json::{json, Value};

/// Median, min and max of samples (which it sorts).
pub fn spread(samples: &mut [f64]) -> (f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    let n = samples.len();
    let median = if n % 2 == 1 { samples[n / 2] } else { (samples[n / 2 - 1] + samples[n / 2]) / 2.0 };
    (median, samples[0], samples[n - 1])
}

/// Where raw figures go.
pub fn dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ALWAYSON_BENCH_DIR") {
        return dir.into();
    }
    // Benches run from target/<profile>/deps/.
    let exe = std::env::current_exe().unwrap_or_default();
    exe.ancestors().nth(3).map(|target| target.join("bench")).unwrap_or_else(|| "target/bench".into())
}

/// One benchmark's table: printed as markdown, saved with its raw samples.
pub struct Table {
    name: String,
    title: String,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    raw: Vec<Value>,
}

impl Table {
    pub fn new(name: &str, title: &str, headers: &[&str]) -> Self {
        Self {
            name: name.into(),
            title: title.into(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
            raw: Vec::new(),
        }
    }

    /// A row of the table, and the raw figures behind it.
    pub fn row(&mut self, cells: &[String], raw: Value) {
        self.rows.push(cells.to_vec());
        self.raw.push(raw);
    }

    pub fn markdown(&self) -> String {
        let mut out = format!("\n{}\n\n| {} |\n|", self.title, self.headers.join(" | "));
        for (i, _) in self.headers.iter().enumerate() {
            out.push_str(if i == 0 { "---|" } else { "---:|" });
        }
        out.push('\n');
        for r in &self.rows {
            out.push_str(&format!("| {} |\n", r.join(" | ")));
        }
        out
    }

    /// Prints the table and writes `<dir>/<name>.json`.
    pub fn finish(self, extra: Value) {
        println!("{}", self.markdown());
        let dir = dir();
        let doc = json!({ "benchmark": self.name, "title": self.title, "rows": self.raw, "extra": extra });
        let path = dir.join(format!("{}.json", self.name));
        match std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&path, serde_json::to_vec_pretty(&doc).expect("JSON")))
        {
            Ok(()) => println!("(raw figures: {})", path.display()),
            Err(e) => eprintln!("could not write {}: {e}", path.display()),
        }
    }
}
