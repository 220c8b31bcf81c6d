//! DuckDB: turning uploads into Parquet, and read-only SQL over the catalog.
//!
//! Two kinds of connection, never mixed:
//! - ingest connections run only SQL this module writes, over temporary files;
//! - the query database runs caller SQL with external access off, file access
//!   limited to the store's local folder, and the configuration locked, so a
//!   query cannot read `/etc/passwd`, ATTACH, COPY, INSTALL or LOAD, nor turn
//!   those guards off. Only one SELECT/WITH statement is accepted, rows are
//!   capped and a timer interrupts a query that runs too long.

use std::io::BufRead;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use duckdb::Connection;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::catalog::Column;
use crate::error::{Result, StoreError};

/// Upload formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Jsonl,
    Parquet,
}

impl Format {
    /// Guesses from a file name's extension.
    pub fn from_name(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        if lower.ends_with(".csv") {
            Some(Self::Csv)
        } else if lower.ends_with(".jsonl") || lower.ends_with(".ndjson") {
            Some(Self::Jsonl)
        } else if lower.ends_with(".parquet") {
            Some(Self::Parquet)
        } else {
            None
        }
    }
}

/// A SQL string literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// What a conversion produced.
#[derive(Debug, Clone)]
pub struct ParquetInfo {
    pub rows: u64,
    pub schema: Vec<Column>,
}

/// Reads `input` in `format` and writes it as Parquet to `output`.
/// A malformed file fails naming the line and the reason, and writes nothing usable.
///
/// With `like` (the columns of the corpus the file is appended to), the
/// file's columns must be those (in any order) and are written as them. Each
/// file's types would be sniffed from its own values (ids read as numbers
/// once and as text the next time), so a CSV or JSONL file is read with the
/// corpus's types: each value is converted once from what the file says,
/// and one that does not fit is an error. A Parquet file's columns are cast.
pub fn convert_to_parquet(
    input: &Path,
    format: Format,
    output: &Path,
    like: &[Column],
) -> Result<ParquetInfo> {
    let conn = Connection::open_in_memory()?;
    let source = literal(&input.to_string_lossy());
    // The header names the delimiter, so DuckDB's sniffer cannot settle on
    // another dialect for a broken file.
    let delimiter = match format {
        Format::Csv => literal(&header_delimiter(input)?.to_string()),
        Format::Jsonl | Format::Parquet => String::new(),
    };
    // `types`: a struct literal of column name to type name, for CSV and JSONL.
    let reader = |types: Option<&str>| match format {
        Format::Csv => {
            let types = types.map(|t| format!(", types = {t}")).unwrap_or_default();
            format!(
                "read_csv({source}, header = true, delim = {delimiter}, quote = '\"', escape = '\"', \
                 auto_detect = true, strict_mode = true{types})"
            )
        }
        Format::Jsonl => {
            let columns = types
                .map(|t| format!(", columns = {t}"))
                .unwrap_or_default();
            format!("read_json({source}, format = 'newline_delimited'{columns})")
        }
        Format::Parquet => format!("read_parquet({source})"),
    };
    let unreadable = |e: duckdb::Error, context: &str| {
        // DuckDB's reason for a broken CSV rarely names the line: the scan
        // (run only on failure, to keep ingest at DuckDB's speed) does.
        let precise = match format {
            Format::Csv => check_csv(input).err(),
            // DuckDB's line numbers for JSONL are one too high.
            Format::Jsonl => check_jsonl(input).err(),
            Format::Parquet => None,
        };
        precise.unwrap_or_else(|| {
            // The upload's temporary path and the statement it was read by
            // (DuckDB's "LINE 1: COPY ..." context) mean nothing to the client.
            let reason = e.to_string();
            // DuckDB's hints for its own reader options mean nothing either.
            let reason = reason
                .split("\nLINE ")
                .next()
                .and_then(|r| r.split("\nTry setting").next())
                .unwrap_or_default()
                .trim();
            let reason = reason.replace(input.to_string_lossy().as_ref(), "the upload");
            StoreError::InvalidInput(format!(
                "cannot read the {format:?} file: {reason}{context}"
            ))
        })
    };
    let (select, from, note) = if like.is_empty() {
        ("*".to_owned(), reader(None), String::new())
    } else {
        let sniffed = describe_query(&conn, &format!("SELECT * FROM {}", reader(None)))
            .map_err(|e| unreadable(e, ""))?;
        as_columns(&sniffed, like, format, reader)?
    };
    let target = literal(&output.to_string_lossy());
    // One statement (not a batch): type names come from the stored manifest.
    conn.execute(
        &format!(
            "COPY (SELECT {select} FROM {from}) TO {target} (FORMAT parquet, COMPRESSION zstd)"
        ),
        [],
    )
    .map_err(|e| unreadable(e, &note))?;
    parquet_info(&conn, output)
}

/// How to read a file whose columns were `sniffed` as `like`'s: the select
/// list, the reader (typed for CSV and JSONL, where a Parquet file's columns
/// are cast in the select list), and a note naming the types that differed
/// from the sniffed ones (empty when none did).
fn as_columns(
    sniffed: &[Column],
    like: &[Column],
    format: Format,
    reader: impl Fn(Option<&str>) -> String,
) -> Result<(String, String, String)> {
    let same_names = sniffed.len() == like.len()
        && like
            .iter()
            .all(|c| sniffed.iter().any(|r| r.name == c.name));
    if !same_names {
        return Err(StoreError::InvalidInput(format!(
            "the file's columns {} do not match the corpus's columns {}",
            describe_columns(sniffed),
            describe_columns(like)
        )));
    }
    // Each corpus column, and the type it was sniffed as when that differs.
    let columns: Vec<(&Column, Option<&str>)> = like
        .iter()
        .map(|c| {
            let read = sniffed.iter().find(|r| r.name == c.name);
            (c, read.map(|r| r.kind.as_str()).filter(|k| *k != c.kind))
        })
        .collect();
    let differing: Vec<String> = columns
        .iter()
        .filter_map(|(c, read)| {
            read.map(|read| format!("{} as {} (it reads as {read})", c.name, c.kind))
        })
        .collect();
    let note = if differing.is_empty() {
        String::new()
    } else {
        format!(
            " (the file was read with the corpus's types: {})",
            differing.join(", ")
        )
    };
    if format == Format::Parquet {
        let select: Vec<String> = columns
            .iter()
            .map(|(c, read)| {
                let name = ident(&c.name);
                match read {
                    Some(_) => format!("CAST({name} AS {}) AS {name}", c.kind),
                    None => name,
                }
            })
            .collect();
        return Ok((select.join(", "), reader(None), note));
    }
    let names: Vec<String> = like.iter().map(|c| ident(&c.name)).collect();
    let types: Vec<String> = like
        .iter()
        .map(|c| format!("{}: {}", literal(&c.name), literal(&c.kind)))
        .collect();
    let typed = reader(Some(&format!("{{{}}}", types.join(", "))));
    Ok((names.join(", "), typed, note))
}

/// The columns a query returns, as DuckDB names their types.
fn describe_query(conn: &Connection, query: &str) -> duckdb::Result<Vec<Column>> {
    let mut stmt = conn.prepare(&format!("DESCRIBE {query}"))?;
    stmt.query_map([], |r| {
        Ok(Column {
            name: r.get(0)?,
            kind: r.get(1)?,
        })
    })?
    .collect()
}

/// `(name TYPE, ...)`, as errors show a schema.
pub(crate) fn describe_columns(schema: &[Column]) -> String {
    let cols: Vec<String> = schema
        .iter()
        .map(|c| format!("{} {}", c.name, c.kind))
        .collect();
    format!("({})", cols.join(", "))
}

/// Delimiters a CSV upload may use; the header line decides which.
const DELIMITERS: [u8; 4] = [b',', b'\t', b';', b'|'];

/// The delimiter a CSV file's header line uses most.
fn header_delimiter(path: &Path) -> Result<char> {
    let file = std::fs::File::open(path)
        .map_err(|e| StoreError::Internal(format!("cannot open the upload: {e}")))?;
    let mut header = Vec::new();
    std::io::BufReader::new(file)
        .read_until(b'\n', &mut header)
        .map_err(|e| StoreError::Internal(format!("cannot read the upload: {e}")))?;
    Ok(char::from(delimiter_of(&header)))
}

fn delimiter_of(header: &[u8]) -> u8 {
    DELIMITERS
        .into_iter()
        .max_by_key(|d| header.iter().filter(|b| *b == d).count())
        .unwrap_or(b',')
}

/// Checks a CSV file's structure (RFC 4180 quoting, every record as wide as
/// the header) in one pass, and returns its delimiter.
pub fn check_csv(path: &Path) -> Result<char> {
    let file = std::fs::File::open(path)
        .map_err(|e| StoreError::Internal(format!("cannot open the upload: {e}")))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    check_csv_reader(&mut reader)
}

/// Checks that every non-blank line of a JSONL file is one JSON object,
/// naming the first line that is not and why.
pub fn check_jsonl(path: &Path) -> Result<()> {
    let file = std::fs::File::open(path)
        .map_err(|e| StoreError::Internal(format!("cannot open the upload: {e}")))?;
    check_jsonl_reader(std::io::BufReader::with_capacity(1 << 20, file))
}

fn check_jsonl_reader(mut reader: impl std::io::BufRead) -> Result<()> {
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| StoreError::Internal(format!("cannot read the upload: {e}")))?;
        if read == 0 {
            return Ok(());
        }
        let bad =
            |reason: String| StoreError::InvalidInput(format!("JSONL line {number}: {reason}"));
        let Some(&first) = line.iter().find(|b| !b.is_ascii_whitespace()) else {
            continue;
        };
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&line) {
            // serde's position is within the line: keep the column, drop "line 1".
            let reason = e.to_string();
            let reason = reason
                .rsplit_once(" at line ")
                .map_or(reason.as_str(), |(r, _)| r);
            return Err(bad(format!("{reason} at column {}", e.column())));
        }
        if first != b'{' {
            return Err(bad("each line must be one JSON object".into()));
        }
    }
    Ok(())
}

fn check_csv_reader(reader: &mut impl std::io::BufRead) -> Result<char> {
    let bad = |line: usize, reason: String| {
        StoreError::InvalidInput(format!("CSV line {line}: {reason}"))
    };
    let mut first = Vec::new();
    reader
        .read_until(b'\n', &mut first)
        .map_err(|e| StoreError::Internal(format!("cannot read the upload: {e}")))?;
    if first.iter().all(u8::is_ascii_whitespace) {
        return Err(bad(1, "the header line is empty".into()));
    }
    let delimiter = delimiter_of(&first);
    let mut scanner = CsvScanner::new(delimiter);
    scanner.feed(&first);
    let mut buffer = Vec::with_capacity(1 << 16);
    loop {
        buffer.clear();
        let n = reader
            .read_until(b'\n', &mut buffer)
            .map_err(|e| StoreError::Internal(format!("cannot read the upload: {e}")))?;
        if n == 0 {
            break;
        }
        scanner.feed(&buffer);
        if let Some((line, reason)) = scanner.error.take() {
            return Err(bad(line, reason));
        }
    }
    scanner
        .finish()
        .map_err(|(line, reason)| bad(line, reason))?;
    Ok(char::from(delimiter))
}

/// A byte-level CSV record counter.
struct CsvScanner {
    delimiter: u8,
    line: usize,
    record_line: usize,
    in_quotes: bool,
    after_quote: bool,
    fields: usize,
    header_fields: Option<usize>,
    record_has_data: bool,
    error: Option<(usize, String)>,
}

impl CsvScanner {
    fn new(delimiter: u8) -> Self {
        Self {
            delimiter,
            line: 1,
            record_line: 1,
            in_quotes: false,
            after_quote: false,
            fields: 1,
            header_fields: None,
            record_has_data: false,
            error: None,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.error.is_some() {
                return;
            }
            if self.in_quotes {
                match b {
                    b'"' => {
                        self.in_quotes = false;
                        self.after_quote = true;
                    }
                    b'\n' => self.line += 1,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' if self.after_quote => {
                    // An escaped quote ("") inside a quoted field.
                    self.in_quotes = true;
                    self.after_quote = false;
                }
                b'"' => {
                    self.in_quotes = true;
                    self.record_has_data = true;
                }
                b'\n' => {
                    self.end_record();
                    self.line += 1;
                    self.record_line = self.line;
                }
                b'\r' => {}
                b if b == self.delimiter => {
                    self.fields += 1;
                    self.after_quote = false;
                    self.record_has_data = true;
                }
                _ if self.after_quote => {
                    self.error = Some((
                        self.line,
                        "text after a closing quote (quote the whole field and double inner quotes)"
                            .into(),
                    ));
                }
                _ => self.record_has_data = true,
            }
        }
    }

    fn end_record(&mut self) {
        self.after_quote = false;
        if !self.record_has_data && self.fields == 1 {
            return; // a blank line
        }
        match self.header_fields {
            None => self.header_fields = Some(self.fields),
            Some(expected) if expected != self.fields => {
                self.error = Some((
                    self.record_line,
                    format!("{} fields, but the header has {expected}", self.fields),
                ));
            }
            Some(_) => {}
        }
        self.fields = 1;
        self.record_has_data = false;
    }

    fn finish(mut self) -> std::result::Result<(), (usize, String)> {
        if self.in_quotes {
            return Err((self.record_line, "a quoted field is never closed".into()));
        }
        self.end_record();
        match self.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn parquet_info(conn: &Connection, file: &Path) -> Result<ParquetInfo> {
    let source = literal(&file.to_string_lossy());
    let rows: i64 = conn.query_row(
        &format!("SELECT count(*) FROM read_parquet({source})"),
        [],
        |r| r.get(0),
    )?;
    let schema = describe_query(conn, &format!("SELECT * FROM read_parquet({source})"))?;
    Ok(ParquetInfo {
        rows: u64::try_from(rows).unwrap_or(0),
        schema,
    })
}

/// `(id, text)` for every row of `file`: the id column as text, the text columns joined by newlines.
pub fn read_texts(
    file: &Path,
    id_column: &str,
    text_columns: &[String],
) -> Result<Vec<(String, String)>> {
    let conn = Connection::open_in_memory()?;
    let texts: Vec<String> = text_columns
        .iter()
        .map(|c| format!("coalesce(CAST({} AS VARCHAR), '')", ident(c)))
        .collect();
    let sql = format!(
        "SELECT CAST({} AS VARCHAR), concat_ws(chr(10), {}) FROM read_parquet({})",
        ident(id_column),
        texts.join(", "),
        literal(&file.to_string_lossy())
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                r.get::<_, String>(1)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Limits applied to every caller query.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueryLimits {
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Memory all queries together may hold. A query that needs more fails
    /// with DuckDB's out-of-memory error rather than spilling to disk or
    /// taking the memory the chats need (DuckDB's own default is 80 % of RAM).
    #[serde(default = "default_memory_limit_mb")]
    pub memory_limit_mb: u64,
    /// Threads a query may use; 0 is DuckDB's default, one per core.
    #[serde(default)]
    pub threads: usize,
}

fn default_max_rows() -> usize {
    10_000
}
fn default_timeout_ms() -> u64 {
    10_000
}
fn default_memory_limit_mb() -> u64 {
    1024
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            max_rows: default_max_rows(),
            timeout_ms: default_timeout_ms(),
            memory_limit_mb: default_memory_limit_mb(),
            threads: 0,
        }
    }
}

/// A query's answer.
#[derive(Debug, Clone, Serialize)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Map<String, Value>>,
    /// More rows existed than `max_rows`.
    pub truncated: bool,
}

/// One dataset as the query engine sees it: a view over its local Parquet files.
#[derive(Debug, Clone)]
pub struct ViewSource {
    pub name: String,
    pub files: Vec<std::path::PathBuf>,
}

/// SQL that [`QueryEngine::check`] found to be one read-only statement: the
/// only SQL [`QueryEngine::run`] takes, so a query is parsed for the guard once
/// and never runs unchecked.
#[derive(Debug, Clone)]
pub struct ReadOnlySql(String);

/// The read-only SQL engine. DuckDB is opened on the first query: an idle
/// server with no SQL traffic does not carry its memory.
pub struct QueryEngine {
    allowed_dir: String,
    memory_limit_mb: u64,
    threads: usize,
    base: Mutex<Option<Connection>>,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueryEngine")
    }
}

impl QueryEngine {
    /// An engine that may read files under `allowed_dir` only, within the
    /// memory and threads of `limits`.
    pub fn open(allowed_dir: &Path, limits: &QueryLimits) -> Result<Self> {
        let dir = allowed_dir.to_string_lossy();
        let allowed_dir = if dir.ends_with('/') {
            dir.into_owned()
        } else {
            format!("{dir}/")
        };
        Ok(Self {
            allowed_dir,
            memory_limit_mb: limits.memory_limit_mb,
            threads: limits.threads,
            base: Mutex::new(None),
        })
    }

    /// An in-memory database locked down to `allowed_dir`.
    fn locked_down(&self) -> Result<Connection> {
        let conn = Connection::open_in_memory()?;
        // No temp directory: nothing spills into the server's working folder.
        let threads = if self.threads == 0 {
            String::new()
        } else {
            format!("SET threads = {};", self.threads)
        };
        conn.execute_batch(&format!(
            "SET memory_limit = '{}MB'; SET temp_directory = ''; {threads} \
             SET allowed_directories = [{}]; SET enable_external_access = false; \
             SET autoinstall_known_extensions = false; SET autoload_known_extensions = false; \
             SET lock_configuration = true;",
            self.memory_limit_mb,
            literal(&self.allowed_dir),
        ))
        .map_err(|e| StoreError::Internal(format!("cannot lock down the query database: {e}")))?;
        Ok(conn)
    }

    /// A connection to the shared database, opened on first use.
    fn connection(&self) -> Result<Connection> {
        let mut base = self
            .base
            .lock()
            .map_err(|_| StoreError::Internal("query engine lock poisoned".into()))?;
        Ok(match base.as_ref() {
            Some(conn) => conn.try_clone()?,
            None => {
                let conn = self.locked_down()?;
                let clone = conn.try_clone()?;
                *base = Some(conn);
                clone
            }
        })
    }

    /// Refuses anything but one read-only statement (see [`check_one_select`]);
    /// blocking, so call it from a blocking thread.
    pub fn check(&self, sql: &str) -> Result<ReadOnlySql> {
        check_one_select(&self.connection()?, sql)?;
        Ok(ReadOnlySql(sql.to_owned()))
    }

    /// Runs one checked statement over `views`; blocking, so call it from a blocking thread.
    pub fn run(
        &self,
        sql: ReadOnlySql,
        views: &[ViewSource],
        limits: QueryLimits,
    ) -> Result<QueryResult> {
        let ReadOnlySql(sql) = sql;
        let sql = sql.as_str();
        let conn = self.connection()?;
        for view in views {
            let sql = if view.files.is_empty() {
                format!(
                    "CREATE OR REPLACE TEMP VIEW {} AS SELECT NULL AS empty WHERE false",
                    ident(&view.name)
                )
            } else {
                let files: Vec<String> = view
                    .files
                    .iter()
                    .map(|f| literal(&f.to_string_lossy()))
                    .collect();
                format!(
                    "CREATE OR REPLACE TEMP VIEW {} AS SELECT * FROM read_parquet([{}])",
                    ident(&view.name),
                    files.join(", ")
                )
            };
            if let Err(e) = conn.execute_batch(&sql) {
                // A corpus whose files cannot be read fails the queries that
                // use it, with the reason, and no other query.
                let message = format!("corpus {} cannot be read: {e}", view.name);
                tracing::warn!("{message}");
                conn.execute_batch(&format!(
                    "CREATE OR REPLACE TEMP VIEW {} AS SELECT error({}) AS unreadable",
                    ident(&view.name),
                    literal(&message)
                ))
                .map_err(|e| {
                    StoreError::Internal(format!("cannot create view {}: {e}", view.name))
                })?;
            }
        }

        let interrupt = conn.interrupt_handle();
        let timeout = Duration::from_millis(limits.timeout_ms);
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let timer = std::thread::spawn(move || {
            if done_rx.recv_timeout(timeout).is_err() {
                interrupt.interrupt();
                true
            } else {
                false
            }
        });
        let result = collect_rows(&conn, sql, limits.max_rows);
        let _ = done_tx.send(());
        let timed_out = timer.join().unwrap_or(false);
        match result {
            Err(_) if timed_out => Err(StoreError::Timeout(timeout)),
            other => other,
        }
    }
}

/// Runs `sql` and reads up to `max_rows` rows. Values go through Arrow and
/// `arrow-json`, so every DuckDB type comes out as its JSON form (dates and
/// timestamps as text, decimals as numbers, lists, structs and maps nested,
/// untyped `NULL` columns as null) and a fetch error (a timeout's interrupt)
/// is an error, not a panic.
fn collect_rows(conn: &Connection, sql: &str, max_rows: usize) -> Result<QueryResult> {
    let sql_error = |e: duckdb::Error| StoreError::InvalidInput(format!("SQL error: {e}"));
    let mut stmt = conn.prepare(sql).map_err(sql_error)?;
    let batches = stmt.stream_arrow([]).map_err(sql_error)?;
    let columns: Vec<String> = batches
        .get_schema()
        .fields()
        .iter()
        .map(|field| field.name().clone())
        .collect();
    let mut writer = arrow_json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow_json::writer::JsonArray>(Vec::new());
    let (mut taken, mut truncated) = (0, false);
    for batch in batches {
        let mut batch = batch.map_err(sql_error)?;
        if taken + batch.num_rows() > max_rows {
            batch = batch.slice(0, max_rows - taken);
            truncated = true;
        }
        taken += batch.num_rows();
        writer.write(&batch).map_err(|e| {
            StoreError::InvalidInput(format!(
                "a column has no JSON form ({e}); cast it, e.g. to VARCHAR"
            ))
        })?;
        if truncated {
            break;
        }
    }
    writer
        .finish()
        .map_err(|e| StoreError::Internal(format!("cannot finish the JSON rows: {e}")))?;
    let json = writer.into_inner();
    let rows: Vec<Map<String, Value>> = if taken == 0 {
        Vec::new()
    } else {
        serde_json::from_slice(&json)
            .map_err(|e| StoreError::Internal(format!("cannot read back the JSON rows: {e}")))?
    };
    Ok(QueryResult {
        columns,
        rows,
        truncated,
    })
}

/// One statement, and it must read. DuckDB's own parser decides:
/// `json_serialize_sql` serialises SELECT statements only (FROM-first,
/// VALUES, DESCRIBE, SHOW and SUMMARIZE are SELECTs to it) and lists every
/// statement the text holds, however it is quoted (`$$..$$`, `E'..'`) or
/// commented. With one SELECT and nothing else, nothing is written or kept.
fn check_one_select(conn: &Connection, sql: &str) -> Result<()> {
    let serialized: String = conn
        .query_row(
            "SELECT json_serialize_sql(?::VARCHAR)::VARCHAR",
            [sql],
            |row| row.get(0),
        )
        .map_err(|e| StoreError::Internal(format!("cannot parse the query: {e}")))?;
    let parsed: Value = serde_json::from_str(&serialized)
        .map_err(|e| StoreError::Internal(format!("cannot read the parsed query: {e}")))?;
    if parsed["error"].as_bool() == Some(true) {
        let reason = parsed["error_message"].as_str().unwrap_or_default();
        return Err(StoreError::InvalidInput(
            if parsed["error_type"].as_str() == Some("parser") {
                format!("SQL error: {reason}")
            } else {
                format!("only read-only queries (SELECT) are allowed: {reason}")
            },
        ));
    }
    match parsed["statements"].as_array().map_or(0, Vec::len) {
        1 => Ok(()),
        0 => Err(StoreError::InvalidInput("empty SQL".into())),
        _ => Err(StoreError::InvalidInput(
            "only one SQL statement is allowed".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> std::result::Result<char, String> {
        check_csv_reader(&mut text.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn an_append_is_written_as_the_corpus_columns_cast_where_sniffed_otherwise() {
        let dir = std::env::temp_dir().join(lakehouse_providers::openai::new_id("cast-test-"));
        std::fs::create_dir_all(&dir).unwrap();
        let convert = |file: &str, text: &str, like: &[Column]| {
            let input = dir.join(file);
            std::fs::write(&input, text).unwrap();
            let format = if file.ends_with(".csv") {
                Format::Csv
            } else {
                Format::Jsonl
            };
            convert_to_parquet(&input, format, &dir.join(format!("{file}.parquet")), like)
                .map_err(|e| e.to_string())
        };
        let column = |name: &str, kind: &str| Column {
            name: name.into(),
            kind: kind.into(),
        };
        // The corpus began with text ids; this file's ids look like numbers,
        // and its columns come in another order.
        let corpus = [
            column("id", "VARCHAR"),
            column("text", "VARCHAR"),
            column("score", "DOUBLE"),
        ];
        let info = convert("numbers.csv", "score,text,id\n1,one,1\n2,two,2\n", &corpus).unwrap();
        assert_eq!(info.schema, corpus);
        assert_eq!(info.rows, 2);
        // Values keep what the file says: "1.50" and a date stay as written.
        let texts = [column("id", "VARCHAR"), column("text", "VARCHAR")];
        convert("kept.csv", "id,text\n1.50,03/04/2024\n", &texts).unwrap();
        let conn = Connection::open_in_memory().unwrap();
        let kept: (String, String) = conn
            .query_row(
                &format!(
                    "SELECT id, text FROM read_parquet({})",
                    literal(&dir.join("kept.csv.parquet").to_string_lossy())
                ),
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(kept, ("1.50".to_owned(), "03/04/2024".to_owned()));
        // Alone, the same file reads as numbers.
        let alone = convert("alone.csv", "score,text,id\n1,one,1\n", &[]).unwrap();
        assert_eq!(alone.schema[2], column("id", "BIGINT"));
        // Numbers that are not: the cast is named.
        let numeric = [column("id", "BIGINT"), column("text", "VARCHAR")];
        let err = convert("words.jsonl", "{\"id\":\"a1\",\"text\":\"x\"}\n", &numeric).unwrap_err();
        assert!(
            err.contains("in line 1: Failed to cast value to numerical: \"a1\""),
            "{err}"
        );
        assert!(!err.contains("Try setting"), "{err}");
        assert!(
            err.contains("read with the corpus's types: id as BIGINT (it reads as VARCHAR)"),
            "{err}"
        );
        // Other columns are refused before anything is written.
        let err = convert("other.csv", "id,body\n1,x\n", &numeric).unwrap_err();
        assert_eq!(
            err,
            "the file's columns (id BIGINT, body VARCHAR) do not match the corpus's columns (id BIGINT, text VARCHAR)"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn jsonl_errors_name_the_line_and_column() {
        let check = |text: &str| check_jsonl_reader(text.as_bytes()).map_err(|e| e.to_string());
        assert_eq!(check("{\"a\":1}\n\n  \n{\"a\":2}"), Ok(()));
        assert_eq!(
            check("{\"a\":1}\n{\"a\":2}\n{\"id\":\"3\",\"text\": oops}\n{\"a\":4}\n"),
            Err("JSONL line 3: expected value at column 19".into())
        );
        assert_eq!(
            check("{\"a\":1}\n[1, 2]\n"),
            Err("JSONL line 2: each line must be one JSON object".into())
        );
        assert_eq!(
            check("{\"a\":1} {\"b\":2}\n"),
            Err("JSONL line 1: trailing characters at column 9".into())
        );
        assert!(
            check("{\"a\":\n1}\n")
                .unwrap_err()
                .starts_with("JSONL line 1: EOF")
        );

        // Through the ingest conversion: the line as counted from 1, and none of DuckDB's SQL.
        let dir = std::env::temp_dir().join(lakehouse_providers::openai::new_id("jsonl-test-"));
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("bad.jsonl");
        std::fs::write(
            &input,
            "{\"id\":\"1\",\"text\":\"a\"}\n{\"id\":\"2\",\"text\": oops}\n",
        )
        .unwrap();
        let err = convert_to_parquet(&input, Format::Jsonl, &dir.join("out.parquet"), &[])
            .unwrap_err()
            .to_string();
        assert_eq!(err, "JSONL line 2: expected value at column 19");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn csv_check_names_the_line_and_reason() {
        assert_eq!(check("a,b\n1,2\n\n3,\"x,\n\"\"y\"\"\"\n"), Ok(','));
        assert_eq!(check("a;b\n1;2\n"), Ok(';'));
        assert_eq!(check("a\tb\n1\t2"), Ok('\t'));
        let err = check("id,title,text\n6,Broken,\"unterminated\n7,x\n").unwrap_err();
        assert!(
            err.contains("line 2") && err.contains("never closed"),
            "{err}"
        );
        let err = check("id,title\n1,a\n2,b,c\n").unwrap_err();
        assert!(err.contains("line 3") && err.contains("3 fields"), "{err}");
        let err = check("id,t\n1,\"a\"b\n").unwrap_err();
        assert!(
            err.contains("line 2") && err.contains("closing quote"),
            "{err}"
        );
        assert!(check("\n").unwrap_err().contains("header"));
    }

    fn engine() -> (QueryEngine, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(lakehouse_providers::openai::new_id("duck-test-"));
        std::fs::create_dir_all(&dir).unwrap();
        (
            QueryEngine::open(&dir, &QueryLimits::default()).unwrap(),
            dir,
        )
    }

    #[test]
    fn queries_stay_within_the_memory_and_threads_they_are_given() {
        let dir = std::env::temp_dir().join(lakehouse_providers::openai::new_id("duck-test-"));
        std::fs::create_dir_all(&dir).unwrap();
        let limits = QueryLimits {
            memory_limit_mb: 64,
            threads: 1,
            ..QueryLimits::default()
        };
        let engine = QueryEngine::open(&dir, &limits).unwrap();
        let settings = query(
            &engine,
            "SELECT current_setting('memory_limit') AS memory, \
                    current_setting('threads') AS threads, \
                    current_setting('temp_directory') AS temp",
            &[],
            limits,
        )
        .unwrap();
        let row = &settings.rows[0];
        assert_eq!(row["threads"], 1);
        assert_eq!(row["temp"], "");
        assert!(
            row["memory"].as_str().unwrap().starts_with("61.0 MiB"),
            "{row:?}"
        );
        // A hash table of 20M distinct values needs hundreds of MB.
        let err = query(
            &engine,
            "SELECT count(DISTINCT i::VARCHAR) AS n FROM range(20000000) t(i)",
            &[],
            limits,
        )
        .unwrap_err();
        assert!(
            matches!(&err, StoreError::InvalidInput(m) if m.contains("Out of Memory")),
            "{err}"
        );
        // The engine still answers.
        assert_eq!(
            query(&engine, "SELECT 1 AS one", &[], limits).unwrap().rows[0]["one"],
            1
        );
        // Nothing spilled beside the server.
        assert!(!std::path::Path::new(".tmp").exists());
    }

    /// Checks, then runs: what the store does with a client's SQL.
    fn query(
        engine: &QueryEngine,
        sql: &str,
        views: &[ViewSource],
        limits: QueryLimits,
    ) -> Result<QueryResult> {
        engine.run(engine.check(sql)?, views, limits)
    }

    /// One engine for the guard's tests: DuckDB opens once.
    fn guard() -> &'static QueryEngine {
        static GUARD: std::sync::OnceLock<QueryEngine> = std::sync::OnceLock::new();
        GUARD.get_or_init(|| engine().0)
    }

    #[test]
    fn writes_hidden_by_quoting_or_a_cte_are_refused_and_nothing_persists() {
        let (engine, dir) = engine();
        let limits = QueryLimits::default();
        let store_file = dir.join("victim.json");
        for sql in [
            "SELECT $$ ' $$; CREATE TABLE pwn AS SELECT 42 AS x; SELECT ' '".to_owned(),
            "SELECT E'\\''; CREATE MACRO lower(x) AS 'hijacked'; SELECT ''".to_owned(),
            format!(
                "SELECT $$ ' $$; COPY (SELECT 1) TO '{}' (FORMAT csv); SELECT ' '",
                store_file.display()
            ),
            "WITH a AS (SELECT 7) INSERT INTO w SELECT * FROM a".to_owned(),
            "WITH a AS (SELECT 7) DELETE FROM w".to_owned(),
        ] {
            let err = query(&engine, &sql, &[], limits).unwrap_err();
            assert!(matches!(err, StoreError::InvalidInput(_)), "{sql}: {err}");
        }
        assert!(!store_file.exists(), "nothing was written into the store");
        assert!(query(&engine, "SELECT * FROM pwn", &[], limits).is_err());
        let lower = query(&engine, "SELECT lower('ABC') AS l", &[], limits).unwrap();
        assert_eq!(lower.rows[0]["l"], "abc");
        // Reads of every shape still pass.
        for sql in [
            "SELECT 1 AS one;",
            "FROM (VALUES (1), (2)) t(x) -- trailing comment",
            "VALUES (1)",
            "DESCRIBE SELECT 1 AS one",
            "SUMMARIZE SELECT 1 AS one",
            "SELECT $$a;b$$ AS text",
        ] {
            assert!(query(&engine, sql, &[], limits).is_ok(), "{sql}");
        }
    }

    #[test]
    fn a_corpus_whose_files_are_gone_fails_only_the_queries_that_use_it() {
        let (engine, dir) = engine();
        let limits = QueryLimits::default();
        let views = [ViewSource {
            name: "gone".into(),
            files: vec![dir.join("missing.parquet")],
        }];
        assert_eq!(
            query(&engine, "SELECT 1 AS one", &views, limits)
                .unwrap()
                .rows[0]["one"],
            1
        );
        let err = query(&engine, "SELECT * FROM gone", &views, limits).unwrap_err();
        assert!(
            err.to_string().contains("corpus gone cannot be read"),
            "{err}"
        );
    }

    #[test]
    fn every_type_comes_back_in_its_json_form_and_rows_stop_at_the_cap() {
        let (engine, _dir) = engine();
        let limits = QueryLimits::default();
        let typed = query(
            &engine,
            "SELECT NULL AS n, {'k': NULL} AS s, DATE '2024-01-01' AS d, \
                 1.5::DECIMAL(10,2) AS m, TIMESTAMP '2024-01-01 10:00' AS t, [1, 2] AS l, \
                 'x' AS text, 3::BIGINT AS big, true AS b",
            &[],
            limits,
        )
        .unwrap();
        assert_eq!(
            typed.columns,
            ["n", "s", "d", "m", "t", "l", "text", "big", "b"]
        );
        let row = Value::Object(typed.rows[0].clone());
        assert_eq!(row["n"], Value::Null);
        assert_eq!(row["s"], serde_json::json!({"k": null}));
        assert_eq!(row["d"], "2024-01-01");
        assert_eq!(row["m"].as_f64(), Some(1.5), "{row}");
        assert!(
            row["t"]
                .as_str()
                .unwrap()
                .starts_with("2024-01-01T10:00:00"),
            "{row}"
        );
        assert_eq!(row["l"], serde_json::json!([1, 2]));
        assert_eq!(
            (&row["text"], &row["big"], &row["b"]),
            (&"x".into(), &3.into(), &true.into())
        );

        let capped = query(
            &engine,
            "SELECT * FROM range(5000) t(i)",
            &[],
            QueryLimits {
                max_rows: 2500,
                ..limits
            },
        )
        .unwrap();
        assert_eq!((capped.rows.len(), capped.truncated), (2500, true));
        assert_eq!(capped.rows[2499]["i"], 2499);
        let none = query(&engine, "SELECT 1 AS x WHERE false", &[], limits).unwrap();
        assert_eq!(
            (none.columns, none.rows.len(), none.truncated),
            (vec!["x".to_owned()], 0, false)
        );
    }

    #[test]
    fn read_only_check_accepts_reads_and_refuses_the_rest() {
        for ok in [
            "SELECT 1",
            "  with x as (select 1) select * from x;",
            "-- comment\nSELECT ';'",
            "FROM docs",
            "(SELECT 1)",
        ] {
            assert!(guard().check(ok).is_ok(), "{ok}");
        }
        for bad in [
            "COPY docs TO '/tmp/x.csv'",
            "ATTACH '/tmp/x.db'",
            "INSTALL httpfs",
            "LOAD httpfs",
            "SELECT 1; DROP TABLE x",
            "/* hi */ DELETE FROM docs",
            "CREATE TABLE t AS SELECT 1",
            "SET enable_external_access = true",
            "",
        ] {
            assert!(guard().check(bad).is_err(), "{bad}");
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        const WRITES: &[&str] = &[
            "INSERT",
            "UPDATE",
            "DELETE",
            "COPY",
            "ATTACH",
            "DETACH",
            "INSTALL",
            "LOAD",
            "CREATE",
            "DROP",
            "ALTER",
            "PRAGMA",
            "SET",
            "RESET",
            "CALL",
            "EXPORT",
            "IMPORT",
            "CHECKPOINT",
            "VACUUM",
            "USE",
        ];
        const READERS: &[&str] = &[
            "read_csv",
            "read_csv_auto",
            "read_parquet",
            "parquet_scan",
            "read_json",
            "read_json_auto",
            "read_text",
            "read_blob",
            "glob",
            "sniff_csv",
        ];
        const OUTSIDE: &[&str] = &[
            "/etc/passwd",
            "/proc/self/environ",
            "../../../../etc/hosts",
            "/root/.ssh/id_rsa",
            "file:///etc/passwd",
            "/tmp/*",
        ];

        fn random_case(word: &str, mask: u64) -> String {
            word.chars()
                .enumerate()
                .map(|(i, c)| {
                    if mask >> (i % 64) & 1 == 1 {
                        c.to_ascii_lowercase()
                    } else {
                        c.to_ascii_uppercase()
                    }
                })
                .collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            #[test]
            fn the_guard_and_the_csv_check_never_panic(sql in ".{0,200}", bytes in prop::collection::vec(any::<u8>(), 0..200)) {
                let _ = super::guard().check(&sql);
                let _ = check_csv_reader(&mut bytes.as_slice());
            }

            #[test]
            fn writes_are_refused_whatever_the_case_and_comments(
                word in prop::sample::select(WRITES),
                mask in any::<u64>(),
                lead in prop::sample::select(&["", "  ", "\n", "-- note\n", "/* x */ ", "("][..]),
                rest in "[a-z0-9 _.,*']{0,30}",
            ) {
                let sql = format!("{lead}{} {rest}", random_case(word, mask));
                prop_assert!(super::guard().check(&sql).is_err(), "{}", sql);
            }

            #[test]
            fn a_second_statement_is_refused(
                select in "SELECT [0-9]{1,5}( AS [a-z]{1,3}_x)?( FROM t_[a-z]{1,8})?",
                word in prop::sample::select(WRITES),
                rest in "[a-z0-9 _]{0,20}",
            ) {
                prop_assert!(super::guard().check(&select).is_ok(), "{}", select);
                let sql = format!("{select}; {word} {rest}");
                prop_assert!(super::guard().check(&sql).is_err(), "{}", sql);
            }
        }

        proptest! {
            // Each case opens a real, locked-down DuckDB: fewer cases.
            #![proptest_config(ProptestConfig::with_cases(48))]

            #[test]
            fn duckdb_reads_nothing_outside_the_store(
                reader in prop::sample::select(READERS),
                mask in any::<u64>(),
                path in prop::sample::select(OUTSIDE),
            ) {
                let dir = std::env::temp_dir().join("lakehouse-guard-prop");
                std::fs::create_dir_all(&dir).unwrap();
                let engine = QueryEngine::open(&dir, &QueryLimits::default()).unwrap();
                let sql = format!("SELECT * FROM {}('{path}')", random_case(reader, mask));
                let limits = QueryLimits { max_rows: 10, timeout_ms: 5_000, ..QueryLimits::default() };
                prop_assert!(super::query(&engine, &sql, &[], limits).is_err(), "{}", sql);
            }
        }
    }
}
