//! Every CHECK constraint of the schema that opsbuffer evaluates in Rust
//! gives PostgreSQL's answer on rows that probe its edges.

use opsbuffer_core::row::Row;
use opsbuffer_core::types::ColumnType;
use opsbuffer_core::value::Value;
use opsbuffer_tests::{REPLAY, SiteOptions, TestSite, admin};

/// Values that probe comparisons of a column type, NULL included.
fn probes(ty: &ColumnType) -> Vec<Value> {
    let parse = |texts: &[&str]| texts.iter().map(|t| ty.parse_text(t).expect("probe parses")).collect::<Vec<_>>();
    let mut values = match ty {
        ColumnType::Int2 | ColumnType::Int4 | ColumnType::Int8 => parse(&["-1", "0", "1", "89", "90", "91", "360"]),
        ColumnType::Real | ColumnType::Double => parse(&[
            "-91",
            "-90",
            "-90.5",
            "-0.5",
            "0",
            "0.5",
            "89.99",
            "90",
            "359.99",
            "360",
            "NaN",
            "Infinity",
            "-Infinity",
        ]),
        ColumnType::Numeric { .. } => parse(&["-1", "0", "0.001", "1"]),
        ColumnType::Text | ColumnType::Varchar { .. } => parse(&[
            "",
            " ",
            "a",
            "running",
            "completed",
            "failed",
            "Running",
            "open",
            "finalized",
            "camera",
            "spectrometer",
            "heterodyne",
            "constant_el",
            "daisy",
            "pong",
        ]),
        ColumnType::Timestamptz => {
            parse(&["2026-10-01T10:00:00Z", "2026-10-01T09:59:59.999999Z", "2026-10-01T10:00:00.000001Z"])
        }
        _ => Vec::new(),
    };
    values.push(Value::Null);
    values
}

#[tokio::test]
async fn compiled_checks_agree_with_postgres() {
    let _replay = REPLAY.read().await;
    admin().await;
    let site = TestSite::start(SiteOptions { background: false, ..SiteOptions::default() }).await;
    let (_, registry) = site.engine.registry();
    let mut compared = 0;
    let mut compiled_checks = 0;
    for table in registry.tables() {
        for check in &table.checks {
            let Some(compiled) = &check.compiled else { continue };
            compiled_checks += 1;
            // Every combination of probes of the columns the check reads.
            let columns: Vec<usize> =
                (0..table.columns.len()).filter(|c| check.expression.contains(&table.columns[*c].name)).collect();
            let mut rows = vec![Row(vec![Value::Null; table.columns.len()])];
            for column in &columns {
                let mut next = Vec::new();
                for row in &rows {
                    for value in probes(&table.columns[*column].ty) {
                        let mut r = row.clone();
                        r.0[*column] = value;
                        next.push(r);
                    }
                }
                rows = next;
            }

            let mut only_this = (**table).clone();
            only_this.checks = vec![check.clone()];
            let failing_in_postgres: Vec<usize> = site
                .engine
                .local
                .failing_checks(&only_this, &rows)
                .await
                .unwrap()
                .into_iter()
                .map(|(i, _)| i)
                .collect();
            let failing_here: Vec<usize> =
                rows.iter().enumerate().filter(|(_, r)| compiled.eval(r) == Some(false)).map(|(i, _)| i).collect();
            assert_eq!(failing_here, failing_in_postgres, "{}.{}: {}", table.name, check.name, check.expression);
            compared += rows.len();
        }
    }
    assert!(compiled_checks >= 15, "only {compiled_checks} checks compiled");
    println!("{compiled_checks} compiled checks agreed with PostgreSQL on {compared} rows");
    site.stop().await;
}
