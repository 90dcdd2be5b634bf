//! `opsbuffer query TABLE [FILTER...]`: records of the merged view, with
//! the filters, order and cursors of `GET /records/{table}`.

use anyhow::Context;
use clap::Args;
use opsbuffer_engine::Engine;
use opsbuffer_http::params::{consistency, table_query};
use opsbuffer_http::records::render_page;
use serde_json::Value as Json;

use crate::settings::Connections;
use crate::text_table;

/// Arguments of `opsbuffer query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The table: model name (ExecutedObsUnit) or SQL name (executed_obs_unit).
    pub table: String,

    /// Filters as in the HTTP API: column=op.value with eq, neq, lt, lte, gt, gte, in.(a,b), is.null, like, ilike, each negated with not.; a bare column=value means eq.
    pub filters: Vec<String>,

    /// Sort order such as start_time.desc,id.asc; the primary key is the final tie-break.
    #[arg(long)]
    pub order: Option<String>,

    /// Maximum number of records to print (1 to 10000).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,

    /// The cursor printed after the previous page.
    #[arg(long)]
    pub after: Option<String>,

    /// merged (local with pending changes), replica (local alone) or replicated (wait for local to show every acknowledged write).
    #[arg(long, default_value = "merged")]
    pub consistency: String,

    /// Add each record's provenance (database, buffer or read_buffer) and pending transactions.
    #[arg(long)]
    pub provenance: bool,

    /// Print {"records", "next"} as JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub connections: Connections,
}

/// The query-string pairs of the request `GET /records/{table}` would get.
fn pairs(args: &QueryArgs) -> anyhow::Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    for filter in &args.filters {
        let (column, condition) = filter.split_once('=').with_context(|| {
            format!("filter {filter:?} has no '='; write column=op.value, such as status=eq.running")
        })?;
        pairs.push((column.to_owned(), condition.to_owned()));
    }
    pairs.push(("limit".into(), args.limit.to_string()));
    pairs.push(("consistency".into(), args.consistency.clone()));
    if let Some(order) = &args.order {
        pairs.push(("order".into(), order.clone()));
    }
    if let Some(after) = &args.after {
        pairs.push(("after".into(), after.clone()));
    }
    Ok(pairs)
}

fn text_of(value: &Json) -> String {
    match value {
        Json::Null => String::new(),
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub async fn run(args: QueryArgs) -> anyhow::Result<()> {
    let mut config = args.connections.site_config();
    // Only reads: a Redis without fsync does not stop a query.
    config.allow_unsafe_redis = true;
    let engine = Engine::start(config).await.context("start-up failed")?;
    let pairs = pairs(&args)?;
    let table = engine.table(&args.table).map_err(|e| anyhow::anyhow!("{e}"))?;
    let query = table_query(&table, &pairs).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let mode = consistency(&pairs).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let page = engine.query(&table, &query, mode).await?;
    let records =
        render_page(&engine, &table, &page, args.provenance).await.map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let next = page.page.next.map(|c| c.encode(&table, &query.order));

    if args.json {
        let json = serde_json::json!({"records": records, "next": next});
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    let mut header: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
    if args.provenance {
        header.push("_provenance");
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|record| {
            header
                .iter()
                .map(|column| {
                    let value = record.get(*column).unwrap_or(&Json::Null);
                    let text = if *column == "_provenance" {
                        value["source"].as_str().unwrap_or("").to_owned()
                    } else {
                        text_of(value)
                    };
                    text_table::cell(&text)
                })
                .collect()
        })
        .collect();
    print!("{}", text_table::render(&header, &rows));
    match next {
        Some(cursor) => println!("({} records; next page: --after {cursor})", records.len()),
        None => println!("({} records)", records.len()),
    }
    Ok(())
}
