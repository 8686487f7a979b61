//! `cairn-bench-report`: reads the JSON results of `scripts/bench-compare.sh` and writes the
//! comparison section of `docs/benchmarks/README.md`, a CSV of the points, and the plot's
//! gnuplot data and script. See `cairn_bench::compare` and, for the TLS runs,
//! `cairn_bench::tls_cost`.

use anyhow::{Context, Result};
use cairn_bench::compare::{
    gnuplot_script, plot_data, point_from_result, render_errors, render_table, render_targets,
    splice_section,
};
use cairn_bench::tls_cost::render_tls_cost;
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "cairn-bench-report")]
struct Args {
    /// Folder of cairn-bench JSON results (every `*.json` with a measured run is used).
    #[arg(long)]
    results: PathBuf,
    /// Markdown written by the script: machine, date, load, settings, memory.
    #[arg(long)]
    meta: PathBuf,
    /// The README whose generated section is replaced (created when missing).
    #[arg(long)]
    readme: PathBuf,
    /// CSV of every point.
    #[arg(long)]
    csv: PathBuf,
    /// The plot's name as the README links it (relative to the README).
    #[arg(long)]
    png_link: String,
    /// Where the gnuplot data and script go; the script writes to `--png`.
    #[arg(long)]
    plot_data: PathBuf,
    #[arg(long)]
    gnuplot: PathBuf,
    #[arg(long)]
    png: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut points = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&args.results)
        .with_context(|| format!("reading {}", args.results.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if let Some(point) = point_from_result(&value) {
            points.push(point);
        }
    }
    anyhow::ensure!(
        !points.is_empty(),
        "no measured results in {}",
        args.results.display()
    );

    let meta = std::fs::read_to_string(&args.meta)
        .with_context(|| format!("reading {}", args.meta.display()))?;
    let errors = render_errors(&points);
    let errors = if errors.is_empty() {
        String::new()
    } else {
        format!("\nErrors by kind:\n\n{errors}")
    };
    let tls_cost = render_tls_cost(&points);
    let tls_cost = if tls_cost.is_empty() {
        String::new()
    } else {
        format!(
            "\n### TLS cost\n\nThe same system, same run, same settings, started again with TLS on \
             every connection (see **TLS run** above): plaintext (off) against TLS (on). \
             \"on ÷ off\" is the share of the plaintext throughput kept over TLS.\n\n{tls_cost}"
        )
    };
    let section = format!(
        "## Cairn vs etcd\n\n{}\n\n### Results\n\n{}{}\n### Targets (issue 6)\n\n{}\n![Throughput and p99 latency against concurrency, Cairn and etcd]({})\n{}",
        meta.trim_end(),
        render_table(&points),
        errors,
        render_targets(&points),
        args.png_link,
        tls_cost
    );
    let existing =
        std::fs::read_to_string(&args.readme).unwrap_or_else(|_| "# Benchmarks\n".into());
    std::fs::write(&args.readme, splice_section(&existing, &section))?;

    let mut csv = String::from(
        "system,workload,concurrency,ops_per_sec,p50_ms,p99_ms,max_ms,errors,errors_by_kind\n",
    );
    for p in &points {
        let kinds: Vec<String> = p
            .errors_by_kind
            .iter()
            .map(|(kind, count)| format!("{kind}={count}"))
            .collect();
        csv.push_str(&format!(
            "{},{},{},{:.1},{:.3},{:.3},{:.3},{},{}\n",
            p.system,
            p.workload,
            p.concurrency,
            p.throughput,
            p.p50,
            p.p99,
            p.max,
            p.errors,
            kinds.join(";")
        ));
    }
    std::fs::write(&args.csv, csv)?;

    let (data, titles) = plot_data(&points);
    std::fs::write(&args.plot_data, data)?;
    std::fs::write(
        &args.gnuplot,
        gnuplot_script(
            &args.plot_data.display().to_string(),
            &args.png.display().to_string(),
            &titles,
        ),
    )?;
    Ok(())
}
