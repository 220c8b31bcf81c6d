//! Ingest throughput of a CSV into a corpus (parse, Parquet write, hash, store,
//! register; embedder `none`) against DuckDB's own `COPY ... TO parquet` on the
//! same file. Run through `scripts/bench_store.sh`; prints one JSON line.
//!
//! Args: [rows (default 1000000)]

use std::time::Instant;

use lakehouse_retrieval::catalog::CorpusSettings;
use lakehouse_retrieval::duck::{Format, QueryLimits, literal};
use lakehouse_retrieval::embed::Embedders;
use lakehouse_retrieval::objects::{Caps, Objects, StoreConfig};
use lakehouse_retrieval::store::{NoProgress, Store};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rows: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("lakehouse-bench-ingest-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let csv = dir.join("rows.csv");
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&csv)?);
        writeln!(out, "id,title,text,score")?;
        for i in 0..rows {
            writeln!(
                out,
                "{i},title {i},\"row {i} talks about topic {} and item {}\",{}",
                i % 97,
                i % 1013,
                i % 100
            )?;
        }
    }
    let csv_bytes = std::fs::metadata(&csv)?.len();

    let conn = duckdb::Connection::open_in_memory()?;
    let start = Instant::now();
    conn.execute_batch(&format!(
        "COPY (SELECT * FROM read_csv({}, header = true, auto_detect = true)) TO {} (FORMAT parquet, COMPRESSION zstd)",
        literal(&csv.to_string_lossy()),
        literal(&dir.join("duckdb.parquet").to_string_lossy())
    ))?;
    let duckdb_s = start.elapsed().as_secs_f64();

    let config = StoreConfig::Local {
        root: dir.join("store"),
        caps: Caps::default(),
    };
    let store = Store::open(
        Objects::open(&config)?,
        Embedders::new(Vec::new(), 0),
        QueryLimits::default(),
    )
    .await?;
    store
        .create_corpus(
            "bench",
            CorpusSettings {
                text_columns: vec!["text".into()],
                id_column: "id".into(),
                embedder: "none".into(),
            },
        )
        .await?;
    let start = Instant::now();
    let report = store
        .ingest_file("bench", &csv, Format::Csv, &NoProgress)
        .await?;
    let ours_s = start.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&dir)?;
    println!(
        "{{\"rows\":{},\"csv_mb\":{:.1},\"duckdb_copy_s\":{duckdb_s:.3},\"lakehouse_ingest_s\":{ours_s:.3},\
         \"lakehouse_rows_per_s\":{:.0},\"ratio_vs_duckdb\":{:.3}}}",
        report.rows,
        csv_bytes as f64 / 1e6,
        report.rows as f64 / ours_s,
        duckdb_s / ours_s
    );
    Ok(())
}
